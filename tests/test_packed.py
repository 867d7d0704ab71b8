"""Reordered (oneDNN) Linear weights for CPU sampling: same outputs as F.linear, kept in step with the weights."""

from __future__ import annotations

import pytest
import torch
from test_kv_cache import assert_same
from test_policy_prefix import rand_tokens
from torch import nn

from juncture.config import ModelConfig
from juncture.policy import packed
from juncture.policy.base import SamplingParams
from juncture.policy.hf import HFPolicy

pytestmark = pytest.mark.skipif(not packed.AVAILABLE, reason="torch built without oneDNN")


def small_net(dtype: torch.dtype) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(24, 40, bias=False), nn.SiLU(), nn.Linear(40, 7)).to(dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("shape", [(5, 24), (3, 1, 24), (2, 9, 24)])
def test_same_outputs_as_linear(dtype, shape):
    net = small_net(dtype)
    x = torch.randn(shape).to(dtype)
    with torch.no_grad():
        want = net(x)
        with packed.PackedLinears(net).active():
            got = net(x)
            transposed = net(torch.randn(shape[-1], *shape[:-1]).to(dtype).movedim(0, -1))  # a non-contiguous input
    assert got.dtype == want.dtype and got.shape == want.shape == transposed.shape
    if dtype == torch.bfloat16:
        assert torch.equal(got, want)  # both run oneDNN's bf16 kernel
    else:
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_forward_is_restored_even_after_an_error():
    net = small_net(torch.float32)
    packing = packed.PackedLinears(net)
    with pytest.raises(RuntimeError, match="boom"), packing.active():
        assert "forward" in vars(net[0])
        raise RuntimeError("boom")
    assert all("forward" not in vars(m) for m in net)
    assert len(packing.weights) == 2  # both Linears, with and without bias


def test_repacks_after_the_weights_change_in_place():
    net = small_net(torch.float32)
    packing = packed.PackedLinears(net)
    x = torch.randn(4, 24)
    with torch.no_grad():
        with packing.active():
            before = net(x)
        with packing.active():  # no change: the copies are reused, not re-made
            first = packing.weights[net[0]]
        assert packing.weights[net[0]] is first
        net[0].weight.mul_(2.0)  # what an optimizer step or load_state_dict does
        want = net(x)
        with packing.active():
            after = net(x)
    assert not torch.allclose(before, after)
    torch.testing.assert_close(after, want, rtol=1e-5, atol=1e-5)


@pytest.fixture(scope="module")
def policy(tiny_model_dir):
    return HFPolicy.load(ModelConfig(path=str(tiny_model_dir)))


@pytest.mark.parametrize("params", [SamplingParams(greedy=True), SamplingParams(temperature=0.8, top_p=0.9)])
def test_generations_match_plain_linear(policy, params):
    header = rand_tokens(60, 3)
    prompts = [header + rand_tokens(k, 40 + k) for k in (4, 11, 2)] + [rand_tokens(9, 5)]
    outs = {}
    for pack in (True, False):
        policy.pack_weights = pack
        try:
            outs[pack] = policy.generate(prompts, [12, 5, 9, 12], params, torch.Generator().manual_seed(0))
        finally:
            policy.pack_weights = packed.AVAILABLE
    assert_same(outs[True], outs[False])
    assert all("forward" not in vars(m) for m in policy.gen_model.modules())
