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

import torch
from vllm.v1.sample.logits_processor import BatchUpdate, LogitsProcessor
from vllm.v1.sample.logits_processor.builtin import process_dict_updates

KEY = "juncture_scores"  # SamplingParams.extra_args key: the request's name in the records


class ScoreRecorder(LogitsProcessor):
    """Records (lse, entropy) of the temperature-scaled logits per tracked request and output position."""

    # request name -> {output position: (lse, entropy)}, filled as tensors, read by `take`
    records: dict[str, dict[int, tuple[torch.Tensor, torch.Tensor]]] = {}

    def __init__(self, vllm_config, device: torch.device, is_pin_memory: bool):
        self.rows: dict[int, tuple[str, float, list[int]]] = {}  # batch index -> (name, T, its output tokens)

    def is_argmax_invariant(self) -> bool:
        return False  # run with the raw logits, before penalties and temperature

    def update_state(self, batch_update: BatchUpdate | None) -> None:
        def track(params, _prompt, output):
            name = (params.extra_args or {}).get(KEY)
            return None if name is None else (name, params.temperature or 1.0, output)

        process_dict_updates(self.rows, batch_update, track)

    def apply(self, logits: torch.Tensor) -> torch.Tensor:
        if not self.rows:
            return logits
        index = list(self.rows)
        temps = torch.tensor([self.rows[i][1] for i in index], dtype=torch.float32, device=logits.device)
        scaled = logits[index].float() / temps[:, None]
        lse = torch.logsumexp(scaled, -1)
        entropy = lse - (torch.softmax(scaled, -1) * scaled).sum(-1)
        for j, i in enumerate(index):
            name, _, output = self.rows[i]
            # a row still in a chunked prefill samples a token vLLM drops: the real one overwrites its entry
            self.records.setdefault(name, {})[len(output)] = (lse[j], entropy[j])
        return logits

    @classmethod
    def take(cls, name: str, count: int) -> tuple[list[float], list[float]] | None:
        """(lse, entropy) lists for positions [0, count) of `name`, forgotten after; None if any is missing."""
        got = cls.records.pop(name, {})
        if any(k not in got for k in range(count)):
            return None
        pairs = torch.stack([torch.stack(got[k]) for k in range(count)]).cpu().tolist() if count else []
        return [lse for lse, _ in pairs], [h for _, h in pairs]
