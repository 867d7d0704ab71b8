"""Linear weights reordered once into oneDNN's blocked layout, for sampling on a CPU.

A decode step multiplies a few rows by every weight of the model, so it is bound by reading
the weights. `F.linear` on a CPU reads them from the plain row-major layout (fp32 goes to
MKL's sgemm, which takes a slow path on AMD CPUs; bf16 goes to oneDNN, which adapts the
layout on every call). Reordering each weight once, when the weights change, and calling
oneDNN's linear on the reordered copy runs SmolLM2's matrix products 2.5-3x faster in fp32
and about 1.5x in bf16 on this project's machine (docs/benchmarks.md). bf16 results are
bit-identical to `F.linear`; fp32 ones differ by accumulation order (~1e-6 relative).

The copies cost one more set of Linear weights in memory (the tied embedding included).
"""

from __future__ import annotations

from contextlib import contextmanager

import torch
from torch import nn

AVAILABLE = torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_reorder_linear_weight")
BATCH_HINT = 64  # the row count oneDNN picks its layout for; any count works, this one was fastest at 1-600 rows


def weights_version(model: nn.Module) -> int:
    """Changes whenever a parameter is replaced or updated in place (optimizer step, load_state_dict)."""
    return hash(tuple((id(p), p._version) for p in model.parameters()))


class PackedLinears:
    """Reordered copies of a model's Linear weights, re-made lazily after the weights change."""

    def __init__(self, model: nn.Module):
        self.model = model
        self.version: int | None = None
        self.weights: dict[nn.Linear, torch.Tensor] = {}

    def sync(self) -> None:
        version = weights_version(self.model)
        if version != self.version:
            self.weights = {}  # free the stale copies before making new ones
            self.weights = {m: torch.ops.mkldnn._reorder_linear_weight(m.weight.detach(), BATCH_HINT)
                            for m in self.model.modules() if type(m) is nn.Linear}
            self.version = version

    @contextmanager
    def active(self):
        """Inside the block, (no-grad) forwards of the model's Linears use the reordered weights."""
        self.sync()
        for module, weight in self.weights.items():
            module.forward = _packed_forward(weight, module.bias)
        try:
            yield
        finally:
            for module in self.weights:
                del module.forward  # back to nn.Linear.forward


def _packed_forward(weight: torch.Tensor, bias: torch.Tensor | None):
    def forward(x: torch.Tensor) -> torch.Tensor:
        return torch.ops.mkldnn._linear_pointwise(x.contiguous(), weight, bias, "none", [], "")

    return forward
