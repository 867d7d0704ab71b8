"""Hugging Face transformers backend: batched sampling with a KV cache, per-token log-prob and entropy.

A hand-written decode loop instead of `model.generate` because the agent needs, for every
sampled token, the log-prob and the full-vocabulary entropy under the sampling
distribution, and must stop each row at the first closing tool tag.
"""

from __future__ import annotations

import copy
import os
from contextlib import nullcontext

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, DynamicCache

from juncture.config import ModelConfig
from juncture.policy import fused_decode, packed, prefix_cache
from juncture.policy.base import Generation, SamplingParams, check_budgets
from juncture.policy.kv_cache import GrowableCache
from juncture.policy.loading import resolve_model
from juncture.policy.sampling import new_scratch, sample_step

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


class HFPolicy:
    """`model` holds the trainable fp32 weights; `gen_model` samples (a bf16 copy when dtype=bfloat16).

    Keeping fp32 master weights matters: pure-bf16 AdamW loses updates of size lr=1e-5.
    """

    def __init__(self, model, tokenizer, dtype: str = "float32", prefix_reuse: bool = True,
                 kv_store_bytes: int = 1 << 30, reordered_weights: bool = True, fused: bool = True):
        self.model = model
        self.tokenizer = tokenizer
        self.dtype = DTYPES[dtype]
        self.gen_model = model if self.dtype == torch.float32 else copy.deepcopy(model).to(self.dtype).eval()
        self.eos_ids = _eos_ids(model, tokenizer)
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else min(self.eos_ids)
        self._piece_cache: dict[int, str] = {}
        self.prefix_reuse = prefix_reuse  # False forces the plain padded prefill (for tests and benchmarks)
        self.kv_store = prefix_cache.KVStore(kv_store_bytes) if kv_store_bytes else None  # used with prefix_reuse
        self.preallocate_kv = True  # False decodes with transformers' DynamicCache (for tests and benchmarks)
        # CPU sampling (and fp32 training) multiplies by oneDNN-reordered weight copies (see packed); False: F.linear
        self.pack_weights = reordered_weights and packed.AVAILABLE
        self._packed = packed.PackedLinears(self.gen_model)
        # decode steps of Llama models in fewer, larger ops (see fused_decode); None: transformers' forward
        use_fused = fused and fused_decode.unsupported(self.gen_model) is None
        self.fused_decoder = fused_decode.FusedDecoder(self.gen_model) if use_fused else None

    @classmethod
    def load(cls, cfg: ModelConfig, log=print, prefix_reuse: bool = True) -> HFPolicy:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        path, _ = resolve_model(cfg.path, log=log)
        tokenizer = AutoTokenizer.from_pretrained(path)
        model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).to(resolve_device(cfg.device))
        if cfg.gradient_checkpointing:
            model.gradient_checkpointing_enable()
        return cls(model, tokenizer, cfg.dtype, prefix_reuse, reordered_weights=cfg.reordered_weights,
                   fused=cfg.fused_decode)

    def sync_weights(self) -> None:
        """Copy the trained weights into the sampling model after an optimizer step."""
        if self.gen_model is not self.model:
            self.gen_model.load_state_dict(self.model.state_dict())
        if self.kv_store is not None:
            self.kv_store.clear()  # stale now; free the memory before the next rollouts

    def train_forward(self):
        """Context for training forwards: bf16 autocast over fp32 master weights; in fp32 on a CPU, the
        oneDNN-reordered weights (see packed); else nothing."""
        if self.dtype != torch.float32:
            return torch.autocast(self.device.type, dtype=self.dtype)
        # fp32: gen_model is model. A no-grad pass (old-policy log-probs) needs no transposed copies.
        return self._packed.active(training=torch.is_grad_enabled()) if self._reordering() else nullcontext()

    def sampling_weights(self):
        """Context for sampling forwards: on a CPU, the oneDNN-reordered weight copies (see packed); else nothing."""
        return self._packed.active() if self._reordering() else nullcontext()

    def _reordering(self) -> bool:
        return self.pack_weights and self.device.type == "cpu"

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def piece(self, token: int) -> str:
        text = self._piece_cache.get(token)
        if text is None:
            text = self._piece_cache[token] = self.tokenizer.decode([token])
        return text

    # inference_mode, not just no_grad: a decode step is hundreds of small ops, and each then skips autograd's
    # dispatch bookkeeping (5-10 % of a bf16 rollout at 1-8 rows, docs/benchmarks.md). The tensors it makes and
    # keeps (KV store entries, reordered weights) are never written in place or saved for backward, as that forbids.
    @torch.inference_mode()
    def generate(
        self,
        prompts: list[list[int]],
        max_new_tokens: list[int],
        params: SamplingParams,
        generator: torch.Generator | None = None,
    ) -> list[Generation]:
        """Sample a continuation for every prompt; row i stops at EOS, a stop string, or max_new_tokens[i]."""
        check_budgets(prompts, max_new_tokens)
        if not prompts:
            return []
        was_training = self.gen_model.training
        self.gen_model.eval()
        try:
            return self._generate(prompts, max_new_tokens, params, generator)
        finally:
            self.gen_model.train(was_training)

    def _generate(self, prompts, max_new_tokens, params, generator) -> list[Generation]:
        store = self.kv_store if self.prefix_reuse else None
        if store is not None:
            store.sync(self.gen_model)
        with self.sampling_weights():
            # room for every sampled token but the last, which is never fed back
            cache, mask, logits, prefix = self._prefill(prompts, store, max(max_new_tokens) - 1)
            if self.fused_decoder is not None:
                self.fused_decoder.sync(self._packed.weights if self._reordering() else None)
                attention = nullcontext()  # the fused step takes the shared prefix as an argument
            else:  # transformers' forward reaches it through an attention interface
                attention = prefix_cache.shared_prefix_decoding(self.gen_model, prefix)
            with attention:
                return self._decode(prompts, cache, mask, logits, prefix, store, max_new_tokens, params, generator)

    def _prefill(self, prompts, store=None, reserve: int = 0):
        """KV cache, attention mask, last-token logits of the prompts (left-padded), and any SharedPrefix.

        Shared prefixes are encoded once (see prefix_cache) where that is cheaper than one
        padded forward over every full prompt; the prefix common to all rows then stays apart.
        Spans `store` holds from an earlier call are not encoded again. The cache keeps room for
        `reserve` decode steps, so they write in place (GrowableCache) instead of copying it.
        """
        cache = GrowableCache(reserve) if self.preallocate_kv else DynamicCache()
        tree = prefix_cache.plan(prompts, self.device, store) if self.prefix_reuse else None
        if tree is not None:
            return prefix_cache.tree_prefill(self.gen_model, prompts, tree, store, cache)
        n, width = len(prompts), max(len(p) for p in prompts)
        input_ids = torch.full((n, width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((n, width), dtype=torch.long)
        for i, p in enumerate(prompts):
            input_ids[i, width - len(p) :] = torch.tensor(p)
            mask[i, width - len(p) :] = 1
        input_ids, mask = input_ids.to(self.device), mask.to(self.device)
        logits = self.gen_model(
            input_ids=input_ids, attention_mask=mask, position_ids=(mask.cumsum(-1) - 1).clamp(min=0),
            past_key_values=cache, use_cache=True, logits_to_keep=1,
        ).logits[:, -1]
        return cache, mask, logits, None

    def _decode(self, prompts, cache, mask, logits, prefix, store, max_new_tokens, params, generator):
        device = self.device
        n = len(prompts)
        next_pos = torch.tensor([len(p) for p in prompts], device=device)
        outs = [Generation() for _ in range(n)]
        texts = [""] * n
        rows = list(range(n))  # original index of each live row of the cache
        longest_stop = max((len(s) for s in params.stop_strings), default=0)
        scratch = new_scratch(n, logits.shape[-1], device)  # reused every step: see sample_step
        while rows:
            tokens, logp, ent = sample_step(logits, params, generator, scratch)
            keep = []
            for j, (i, tok, lp, h) in enumerate(zip(rows, tokens.tolist(), logp.tolist(), ent.tolist(), strict=True)):
                out = outs[i]
                out.tokens.append(tok)
                out.logprobs.append(lp)
                out.entropies.append(h)
                if tok in self.eos_ids:
                    out.finish_reason = "eos"
                    continue
                if longest_stop:
                    texts[i] += self.piece(tok)
                    tail = texts[i][-(longest_stop + 32) :]
                    hit = next((s for s in params.stop_strings if s in tail), None)
                    if hit is not None:
                        out.finish_reason, out.stop = "stop", hit
                        continue
                if len(out.tokens) >= max_new_tokens[i]:
                    out.finish_reason = "length"
                    continue
                keep.append(j)
            if store is not None and len(keep) < len(rows):
                kept = set(keep)
                self._remember(store, [j for j in range(len(rows)) if j not in kept], rows, prompts, outs, cache,
                               prefix)
            if not keep:
                break
            if len(keep) < len(rows):
                idx = torch.tensor(keep, device=device)
                cache.batch_select_indices(idx)
                mask, next_pos, tokens = mask[idx], next_pos[idx], tokens[idx]
                rows = [rows[j] for j in keep]
            mask = torch.cat([mask, mask.new_ones((len(rows), 1))], dim=1)
            logits = self._step(tokens, next_pos, mask, cache, prefix)
            next_pos = next_pos + 1
        return outs

    def _step(self, tokens, positions, mask, cache, prefix) -> torch.Tensor:
        """Next-token logits [rows, vocab] after feeding one token per row."""
        if self.fused_decoder is not None:
            return self.fused_decoder(tokens, positions, mask, cache, prefix)
        return self.gen_model(input_ids=tokens[:, None], attention_mask=mask, position_ids=positions[:, None],
                              past_key_values=cache, use_cache=True, shared_prefix=prefix).logits[:, -1]

    @staticmethod
    def _remember(store, finished, rows, prompts, outs, cache, prefix) -> None:
        """Keep finished rows' KV (prompt and all sampled tokens but the last) for the next call to extend."""
        split = prefix.keys[0].shape[2] if prefix is not None else 0
        for j in finished:
            i = rows[j]
            tokens = tuple(prompts[i]) + tuple(outs[i].tokens[:-1])
            store.put(tokens, prefix_cache.row_kv(cache, j, len(tokens) - split, prefix))


def resolve_device(name: str) -> torch.device:
    """`model.device`: 'auto' is the GPU when torch sees one; an unusable explicit choice is an error, not a fallback."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and (not torch.cuda.is_available() or (device.index or 0) >= torch.cuda.device_count()):
        raise ValueError(f"model.device={name!r}, but torch sees {torch.cuda.device_count()} CUDA device(s)")
    return device


def _eos_ids(model, tokenizer) -> set[int]:
    ids = set()
    for source in (getattr(model.generation_config, "eos_token_id", None), tokenizer.eos_token_id):
        if isinstance(source, int):
            ids.add(source)
        elif source:
            ids.update(source)
    return ids
