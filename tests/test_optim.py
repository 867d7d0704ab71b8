"""The trainer's AdamW: fused where the device has the kernel, the same updates as the default implementation."""

from __future__ import annotations

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from juncture.train.optim import adamw


def _params(seed: int, shapes) -> list[torch.nn.Parameter]:
    g = torch.Generator().manual_seed(seed)
    return [torch.nn.Parameter(torch.randn(s, generator=g)) for s in shapes]


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 10_000), lr=st.floats(1e-6, 1e-1), weight_decay=st.floats(0.0, 0.1),
       steps=st.integers(1, 4))
def test_same_trajectory_as_the_default_adamw(seed, lr, weight_decay, steps):
    shapes = [(5, 3), (7,), (2, 2, 2)]
    ours, ref = _params(seed, shapes), _params(seed, shapes)
    opt = adamw(ours, lr=lr, weight_decay=weight_decay)
    ref_opt = torch.optim.AdamW(ref, lr=lr, weight_decay=weight_decay, foreach=False)
    assert opt.defaults["fused"]
    g = torch.Generator().manual_seed(seed + 1)
    for _ in range(steps):
        for a, b in zip(ours, ref, strict=True):
            a.grad = torch.randn(a.shape, generator=g)
            b.grad = a.grad.clone()
        opt.step()
        ref_opt.step()
    for a, b in zip(ours, ref, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    # a checkpoint taken with one implementation loads into the other
    ref_opt.load_state_dict(opt.state_dict())
    assert ref_opt.state_dict()["state"][0]["step"] == steps


def test_hand_worked_first_step():
    """First AdamW step: m = (1-β1)g, v = (1-β2)g², bias-corrected m̂/√v̂ = sign(g), so p -= lr·(sign(g) + wd·p)."""
    p = torch.nn.Parameter(torch.tensor([1.0, -2.0, 0.5]))
    opt = adamw([p], lr=0.1, weight_decay=0.5, eps=0.0)
    p.grad = torch.tensor([3.0, -0.25, 1e-3])
    opt.step()
    # decoupled weight decay first: p *= 1 - lr·wd = 0.95; then p -= lr·sign(g)
    torch.testing.assert_close(p.detach(), torch.tensor([0.95 - 0.1, -1.9 + 0.1, 0.475 - 0.1]))


def test_a_step_changes_the_weights_version():
    """Sampling re-makes its weight copies when `weights_version` changes; the fused kernel alone would not change it."""
    from juncture.policy.packed import weights_version

    model = torch.nn.Linear(3, 2)
    opt = adamw(model.parameters(), lr=1e-3)
    before = weights_version(model)
    for p in model.parameters():
        p.grad = torch.ones_like(p)
    opt.step()
    assert weights_version(model) != before


def test_parameters_without_a_fused_kernel_use_the_default():
    p = torch.nn.Parameter(torch.zeros(3, dtype=torch.float64).to("meta"))
    assert not adamw([p], lr=1e-3).defaults["fused"]
