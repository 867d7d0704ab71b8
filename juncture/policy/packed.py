"""Linear weights reordered once into oneDNN's blocked layout, for sampling on a CPU.

A decode step multiplies a few rows by every weight of the model, so it is bound by reading
the weights. `F.linear` on a CPU reads them from the plain row-major layout (fp32 goes to
MKL's sgemm, which takes a slow path on AMD CPUs; bf16 goes to oneDNN, which adapts the
layout on every call). Reordering each weight once, when the weights change, and calling
oneDNN's linear on the reordered copy runs SmolLM2's matrix products 2.5-3x faster in fp32
and about 1.5x in bf16 on this project's machine (docs/benchmarks.md). bf16 results are
bit-identical to `F.linear`; fp32 ones differ by accumulation order (~1e-6 relative).

The copies cost one more set of Linear weights in memory (the tied embedding included).

fp32 training forwards use them too (`active(training=True)`): `PackedLinear` multiplies by the
reordered weight forward and by a reordered transpose for the input gradient; the weight gradient
stays a plain matmul of the step's activations. This is for fp32 only: under bf16 autocast
`F.linear` already runs oneDNN.
"""

from __future__ import annotations

from contextlib import contextmanager
from functools import partial

import torch
from torch import nn

AVAILABLE = torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_reorder_linear_weight")
BATCH_HINT = 64  # the row count oneDNN picks its layout for; any count works, this one was fastest at 1-600 rows


def weights_version(model: nn.Module) -> int:
    """Changes whenever a parameter is replaced or updated in place (optimizer step, load_state_dict)."""
    return hash(tuple((id(p), p._version) for p in model.parameters()))


class PackedLinears:
    """Reordered copies of a model's Linear weights (and, for training, of their transposes), re-made lazily
    after the weights change."""

    def __init__(self, model: nn.Module):
        self.model = model
        self.version: int | None = None
        self.weights: dict[nn.Linear, torch.Tensor] = {}
        self.transposed: dict[nn.Linear, torch.Tensor] = {}

    def sync(self, transposed: bool = False) -> None:
        version = weights_version(self.model)
        if version != self.version:
            self.weights, self.transposed = {}, {}  # free the stale copies before making new ones
            self.weights = {m: reorder(m.weight) for m in self.model.modules() if type(m) is nn.Linear}
            self.version = version
        if transposed and not self.transposed:
            self.transposed = {m: reorder(m.weight.t()) for m in self.weights}

    @contextmanager
    def active(self, training: bool = False):
        """Inside the block the model's Linears multiply by the reordered weights; with `training`, differentiably."""
        self.sync(transposed=training)
        for module, weight in self.weights.items():
            module.forward = (partial(_trainable, module, weight, self.transposed[module]) if training
                              else partial(linear, weight, module.bias))
        try:
            yield
        finally:
            for module in self.weights:
                del module.forward  # back to nn.Linear.forward


def reorder(weight: torch.Tensor, batch_hint: int = BATCH_HINT) -> torch.Tensor:
    """A copy of `weight` [out, in] in oneDNN's layout, for `linear`."""
    return torch.ops.mkldnn._reorder_linear_weight(weight.detach().contiguous(), batch_hint)


def linear(weight: torch.Tensor, bias: torch.Tensor | None, x: torch.Tensor) -> torch.Tensor:
    """x @ W^T + b with W as made by `reorder`."""
    return torch.ops.mkldnn._linear_pointwise(x.contiguous(), weight, bias, "none", [], "")


def _trainable(module: nn.Linear, weight: torch.Tensor, transposed: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return PackedLinear.apply(x, module.weight, module.bias, weight, transposed)


class PackedLinear(torch.autograd.Function):
    """y = x W^T + b with W reordered for the forward and W^T reordered for the input gradient."""

    @staticmethod
    def forward(ctx, x, weight, bias, packed, packed_t):
        ctx.save_for_backward(x)
        ctx.packed_t, ctx.has_bias = packed_t, bias is not None
        return linear(packed, bias, x)

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        grad = grad.contiguous()
        grad_x = linear(ctx.packed_t, None, grad) if ctx.needs_input_grad[0] else None
        flat = grad.reshape(-1, grad.shape[-1])
        grad_w = flat.t() @ x.reshape(-1, x.shape[-1]) if ctx.needs_input_grad[1] else None
        grad_b = flat.sum(0) if ctx.has_bias and ctx.needs_input_grad[2] else None
        return grad_x, grad_w, grad_b, None, None
