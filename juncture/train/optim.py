"""AdamW with torch's fused kernel where every parameter's device has one.

The fused kernel updates each parameter in one pass; the default (foreach) runs about ten
passes over the parameters and optimizer state. On SmolLM2-135M on this project's 2-core CPU
an optimizer step took 0.06 s fused against 0.33 s (bench/optimizer_step.py, docs/benchmarks.md). The update is the same
up to float rounding (tests/test_optim.py); the state dict has the same format either way.

The fused kernel writes the parameters without bumping their version counters, which is how the
sampling side notices new weights (`packed.weights_version`: reordered copies, fused decode
weights, the KV store); a step hook bumps them.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch.autograd.graph import increment_version

FUSED_DEVICES = {"cpu", "cuda"}


def adamw(params: Iterable[torch.nn.Parameter], **kwargs) -> torch.optim.AdamW:
    """torch.optim.AdamW(params, **kwargs), fused where possible."""
    params = list(params)
    fused = all(p.device.type in FUSED_DEVICES and p.dtype.is_floating_point for p in params)
    opt = torch.optim.AdamW(params, fused=fused or None, **kwargs)
    if fused:
        opt.register_step_post_hook(_bump_versions)
    return opt


def _bump_versions(opt: torch.optim.Optimizer, args, kwargs) -> None:
    increment_version([p for group in opt.param_groups for p in group["params"]])
