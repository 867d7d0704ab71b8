"""Entropies and log-normalizers computed inside the vLLM engine (`model.vllm.scores=engine`).

vLLM returns no full-vocabulary statistic of the distribution it samples from. `ScoreRecorder`
is a vLLM logits processor that sees every step's raw logits before any processing and records,
for each tracked request and output position, the log-normalizer lse = logsumexp(z / T) and the
entropy of softmax(z / T), T the request's temperature (1 when greedy, as the HF backend scores).
With the engine's `logprobs_mode="raw_logits"` and `logprobs=0`, vLLM returns the sampled
token's raw logit z, so its log-prob before top-k/top-p truncation is z / T - lse: no second
forward pass. The numbers are the engine's (its kernels, its rounding), not the trainer's.

The records live in this process: the engine must run in-process (VLLM_ENABLE_V1_MULTIPROCESSING=0,
which the backend sets). Imported only where vllm is installed.
"""

from __future__ import annotations

import itertools

import torch
from vllm.v1.sample.logits_processor import BatchUpdate, LogitsProcessor
from vllm.v1.sample.logits_processor.builtin import process_dict_updates

KEY = "juncture_scores"  # SamplingParams.extra_args key: the request's name in the records


class ScoreRecorder(LogitsProcessor):
    """Records (lse, entropy) of the temperature-scaled logits per tracked request and output position.

    Each step stores one [tracked rows, 2] tensor, left on the engine's device; `take` moves all a call
    needs to the host in one copy (a GPU would otherwise pay a launch and a sync per token).
    """

    # request name -> {output position: (step, row in that step's tensor)}; step -> [rows, 2] (lse, entropy)
    records: dict[str, dict[int, tuple[int, int]]] = {}
    steps: dict[int, torch.Tensor] = {}
    _step_numbers = itertools.count()

    def __init__(self, vllm_config, device: torch.device, is_pin_memory: bool):
        self.rows: dict[int, tuple[str, float, list[int]]] = {}  # batch index -> (name, T, its output tokens)
        self.order: list[int] = []  # the tracked batch indices, with their device index and temperatures
        self.index: torch.Tensor | None = None  # None: rebuild after a batch change
        self.temps: torch.Tensor | None = None

    def is_argmax_invariant(self) -> bool:
        return False  # run with the raw logits, before penalties and temperature

    def update_state(self, batch_update: BatchUpdate | None) -> None:
        def track(params, _prompt, output):
            name = (params.extra_args or {}).get(KEY)
            return None if name is None else (name, params.temperature or 1.0, output)

        if batch_update:
            process_dict_updates(self.rows, batch_update, track)
            self.index = None

    def apply(self, logits: torch.Tensor) -> torch.Tensor:
        if not self.rows:
            return logits
        if self.index is None:
            self.order = sorted(self.rows)
            self.index = torch.tensor(self.order, device=logits.device)
            self.temps = torch.tensor([self.rows[i][1] for i in self.order], device=logits.device)[:, None]
        scaled = logits.index_select(0, self.index).float() / self.temps
        lse = torch.logsumexp(scaled, -1)
        step = next(self._step_numbers)
        self.steps[step] = torch.stack([lse, lse - (torch.softmax(scaled, -1) * scaled).sum(-1)], 1)
        for j, i in enumerate(self.order):
            name, _, output = self.rows[i]
            # a row still in a chunked prefill samples a token vLLM drops: the real one overwrites its entry
            self.records.setdefault(name, {})[len(output)] = (step, j)
        return logits

    @classmethod
    def take(cls, requests: list[tuple[str, int]]) -> list[tuple[list[float], list[float]] | None]:
        """Per (name, count): (lse, entropy) lists for positions [0, count), forgotten after; None if any
        position is missing."""
        got = [cls.records.pop(name, {}) for name, _ in requests]
        used = sorted({step for g in got for step, _ in g.values()})
        start = dict(zip(used, itertools.accumulate((len(cls.steps[s]) for s in used), initial=0), strict=False))
        table = torch.cat([cls.steps[s] for s in used]).cpu().tolist() if used else []
        live = {step for g in cls.records.values() for step, _ in g.values()}
        for step in [s for s in cls.steps if s not in live]:
            del cls.steps[step]
        out = []
        for g, (_, count) in zip(got, requests, strict=True):
            if any(k not in g for k in range(count)):
                out.append(None)
                continue
            pairs = [table[start[step] + j] for step, j in (g[k] for k in range(count))]
            out.append(([lse for lse, _ in pairs], [h for _, h in pairs]))
        return out
