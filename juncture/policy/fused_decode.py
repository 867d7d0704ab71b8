"""One decode step of a Llama model in a few large tensor ops, for sampling.

A decode step of a small model on a CPU is bound by the number of tensor ops as much as by
their arithmetic: transformers' Llama layer runs about sixty per layer (norms in several
pieces, separate q/k/v and gate/up products, RoPE by slicing and concatenation, a 4-D mask
built every step). `FusedDecoder` computes the same function in about twenty: q/k/v and
gate/up each one product over weights concatenated once (reordered for oneDNN on a CPU, see
packed), RoPE from a cos/sin table indexed by position with the half-rotation's sign folded
into the sine, fused RMSNorm, and the attention of `prefix_cache.decode_attention` over the
cache, written in place. Logits match transformers' within float rounding
(tests/test_fused_decode.py); prefill and training keep transformers' model.

Only plain Llama layers are handled (`unsupported` says why a model is not); others decode
through transformers.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import LlamaForCausalLM

from juncture.policy import packed
from juncture.policy.packed import weights_version
from juncture.policy.prefix_cache import SharedPrefix, decode_attention

STATIC_ROPE = {"default", "linear", "llama3"}  # RoPE types whose frequencies do not change with the length


def unsupported(model: nn.Module) -> str | None:
    """Why `FusedDecoder` cannot run `model`, or None when it can."""
    config = model.config
    if config.model_type != "llama":
        return f"model_type {config.model_type!r} (only 'llama' is fused)"
    if config.hidden_act != "silu":
        return f"hidden_act {config.hidden_act!r}"
    rope = (getattr(config, "rope_parameters", None) or {}).get("rope_type", "default")
    if rope not in STATIC_ROPE:
        return f"rope_type {rope!r}"
    if getattr(config, "mlp_bias", False):
        return "mlp_bias"
    if not isinstance(model, LlamaForCausalLM):  # e.g. wrapped by an adapter library: other module paths
        return f"{type(model).__name__} (only LlamaForCausalLM is fused)"
    return None


@dataclass
class _Layer:
    norm_in: torch.Tensor
    qkv: torch.Tensor
    qkv_bias: torch.Tensor | None
    o: torch.Tensor
    o_bias: torch.Tensor | None
    norm_mid: torch.Tensor
    gate_up: torch.Tensor
    down: torch.Tensor


class FusedDecoder:
    """Decode steps of `model` (a Llama); weights re-made lazily after they change.

    With `sync(packed_weights)` it multiplies by oneDNN-reordered weights (a CPU): `o_proj`, `down_proj`
    and the LM head reuse those `PackedLinears` copies, so only q/k/v and gate/up are copied again.
    """

    def __init__(self, model: nn.Module):
        reason = unsupported(model)
        if reason:
            raise ValueError(f"FusedDecoder cannot run this model: {reason}")
        self.model = model
        config = model.config
        self.heads, self.kv_heads = config.num_attention_heads, config.num_key_value_heads
        self.head_dim = getattr(config, "head_dim", None) or config.hidden_size // self.heads
        self.eps = config.rms_norm_eps  # every RMSNorm of a Llama model uses it
        self.version: tuple[int, bool] | None = None
        self.layers: list[_Layer] = []
        self.cos = self.sin = torch.empty(0)

    def sync(self, packed_weights: dict[nn.Linear, torch.Tensor] | None = None) -> None:
        """Make the weights for the next steps: reordered ones (`PackedLinears.weights`, synced) or plain ones."""
        version = (weights_version(self.model), packed_weights is not None)
        if version == self.version:
            return
        self.layers = []  # free the stale copies before making new ones
        self.version = None
        reordered = packed_weights is not None

        def single(m: nn.Linear) -> torch.Tensor:
            return packed_weights[m] if reordered else m.weight.detach()

        def fused(*ms: nn.Linear) -> torch.Tensor:
            w = torch.cat([m.weight.detach() for m in ms])
            return packed.reorder(w) if reordered else w

        def bias(*ms: nn.Linear) -> torch.Tensor | None:
            return None if ms[0].bias is None else torch.cat([m.bias.detach() for m in ms])

        for layer in self.model.model.layers:
            att, mlp = layer.self_attn, layer.mlp
            self.layers.append(_Layer(
                layer.input_layernorm.weight.detach(), fused(att.q_proj, att.k_proj, att.v_proj),
                bias(att.q_proj, att.k_proj, att.v_proj), single(att.o_proj), bias(att.o_proj),
                layer.post_attention_layernorm.weight.detach(), fused(mlp.gate_proj, mlp.up_proj),
                single(mlp.down_proj),
            ))
        self.lm_head = single(self.model.lm_head)
        self.lm_head_bias = bias(self.model.lm_head)
        self._linear = packed.linear if reordered else _plain_linear  # (weight, bias, x), as made above
        self.version = version

    def _rope_table(self, length: int, dtype: torch.dtype) -> None:
        """cos and sign-folded sin [positions, head_dim], computed as transformers' rotary embedding does."""
        if self.cos.shape[0] >= length and self.cos.dtype == dtype:
            return
        rotary = self.model.model.rotary_emb
        length = max(length, 2 * self.cos.shape[0], 1024)
        pos = torch.arange(length, device=rotary.inv_freq.device, dtype=torch.float)
        freqs = pos[:, None] * rotary.inv_freq.float()[None]
        emb = torch.cat((freqs, freqs), dim=-1)
        self.cos = (emb.cos() * rotary.attention_scaling).to(dtype)
        sin = (emb.sin() * rotary.attention_scaling).to(dtype)
        half = self.head_dim // 2
        self.sin = torch.cat([-sin[:, :half], sin[:, half:]], dim=-1)  # rotate_half(x)·sin = flip(x)·sin±

    def _rms_norm(self, h: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        """transformers' LlamaRMSNorm: normalized in fp32, rounded to h's dtype, then scaled."""
        return F.rms_norm(h.float(), (h.shape[-1],), eps=self.eps).to(h.dtype) * weight

    @torch.no_grad()
    def __call__(self, tokens: torch.Tensor, positions: torch.Tensor, mask: torch.Tensor, cache,
                 prefix: SharedPrefix | None = None) -> torch.Tensor:
        """Logits [n, vocab] after feeding `tokens` [n] at `positions` [n].

        `mask` [n, own] marks each row's real cached positions, this step's included; `cache` is a
        transformers Cache (one layer per decoder layer) the step's keys and values are appended to.
        """
        n, heads, kv, dim = tokens.shape[0], self.heads, self.kv_heads, self.head_dim
        h = self.model.model.embed_tokens(tokens)
        self._rope_table(int(positions.max()) + 1, h.dtype)
        cos, sin = self.cos[positions][:, None], self.sin[positions][:, None]
        visible = mask.bool()[:, None, None, :]
        scaling = dim**-0.5
        for i, layer in enumerate(self.layers):
            x = self._rms_norm(h, layer.norm_in)
            qkv = self._linear(layer.qkv, layer.qkv_bias, x).view(n, heads + 2 * kv, dim)
            qk = qkv[:, : heads + kv]
            qk = qk * cos + qk.view(n, heads + kv, 2, dim // 2).flip(2).view(n, heads + kv, dim) * sin
            keys, values = cache.layers[i].update(qk[:, heads:, None], qkv[:, heads + kv :, None])
            q = (qk[:, :heads] * scaling).view(n, kv, heads // kv, dim)
            layer_prefix = None if prefix is None else (prefix.keys[i], prefix.values[i])
            attn = decode_attention(q, keys, values, visible, layer_prefix)
            h = h + self._linear(layer.o, layer.o_bias, attn.reshape(n, heads * dim))
            x = self._rms_norm(h, layer.norm_mid)
            gate, up = self._linear(layer.gate_up, None, x).chunk(2, dim=-1)
            h = h + self._linear(layer.down, None, F.silu(gate) * up)
        h = self._rms_norm(h, self.model.model.norm.weight)
        return self._linear(self.lm_head, self.lm_head_bias, h)


def _plain_linear(weight: torch.Tensor, bias: torch.Tensor | None, x: torch.Tensor) -> torch.Tensor:
    return F.linear(x, weight, bias)
