"""Reordered (oneDNN) Linear weights for CPU sampling: same outputs as F.linear, kept in step with the weights."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from test_kv_cache import assert_same
from test_policy_prefix import rand_tokens
from torch import nn

from juncture.config import ModelConfig
from juncture.credit import train_mask
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
def policies(tiny_model_dir):
    # device="cpu": the reordered copies are a CPU path (the suite also runs on a GPU machine)
    return {dtype: HFPolicy.load(ModelConfig(path=str(tiny_model_dir), dtype=dtype, device="cpu"))
            for dtype in ("float32", "bfloat16")}


@pytest.mark.parametrize("dtype, params", [
    ("float32", SamplingParams(greedy=True)),
    ("bfloat16", SamplingParams(greedy=True)),
    ("bfloat16", SamplingParams(temperature=0.8, top_p=0.9)),
])
def test_generations_match_plain_linear(policies, dtype, params):
    """Same tokens, log-probs and entropies. Sampled only in bf16, where the products are bit-identical:
    fp32 ones differ in rounding, which can move a seeded draw across a token boundary."""
    policy = policies[dtype]
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


# --- fp32 training through the reordered weights ---


def loss_and_grads(net, x, packing=None):
    net.zero_grad(set_to_none=True)
    x = x.clone().requires_grad_(True)
    if packing is None:
        loss = net(x).square().mean()
    else:
        with packing.active(training=True):
            loss = net(x).square().mean()
    loss.backward()
    return loss.detach(), x.grad, {name: p.grad for name, p in net.named_parameters()}


@pytest.mark.parametrize("shape", [(6, 24), (2, 5, 24)])
def test_training_gradients_match_linear(shape):
    """Loss, input gradient and every weight and bias gradient equal the F.linear path's."""
    net = small_net(torch.float32)
    x = torch.randn(shape)
    want = loss_and_grads(net, x)
    got = loss_and_grads(net, x, packed.PackedLinears(net))
    torch.testing.assert_close(got[0], want[0], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(got[1], want[1], rtol=1e-4, atol=1e-6)
    assert got[2].keys() == want[2].keys() == {"0.weight", "2.weight", "2.bias"}
    for name in want[2]:
        torch.testing.assert_close(got[2][name], want[2][name], rtol=1e-4, atol=1e-6)


def test_training_steps_follow_the_weights():
    """After an optimizer step the next forward multiplies by re-made copies: the same trajectory of losses."""
    x = torch.randn(8, 24)
    losses = {}
    for use in (False, True):
        net = small_net(torch.float32)
        packing = packed.PackedLinears(net) if use else None
        opt = torch.optim.SGD(net.parameters(), lr=0.5)
        losses[use] = []
        for _ in range(4):
            loss, _, _ = loss_and_grads(net, x, packing)
            opt.step()
            losses[use].append(loss.item())
    assert losses[True][-1] < losses[True][0]  # training moved the weights
    np.testing.assert_allclose(losses[True], losses[False], rtol=1e-5)


def test_policy_train_forward_uses_them_in_fp32_only(tiny_model_dir):
    fp32 = HFPolicy.load(ModelConfig(path=str(tiny_model_dir), device="cpu"))
    linear = next(m for m in fp32.model.modules() if type(m) is nn.Linear)
    with fp32.train_forward():
        assert "forward" in vars(linear)
    assert "forward" not in vars(linear)
    bf16 = HFPolicy.load(ModelConfig(path=str(tiny_model_dir), dtype="bfloat16", device="cpu"))
    linear = next(m for m in bf16.model.modules() if type(m) is nn.Linear)
    with bf16.train_forward():
        assert "forward" not in vars(linear) and torch.is_autocast_enabled("cpu")


def test_copies_made_while_sampling_serve_the_fp32_update(tiny_model_dir):
    """generate runs under inference_mode, so the reordered copies it makes are inference tensors; the next fp32
    update reuses them (the weights have not changed) and must get the gradients of plain F.linear."""
    pol = HFPolicy.load(ModelConfig(path=str(tiny_model_dir), device="cpu"))
    pol.generate([[5, 6, 7]], [3], SamplingParams(greedy=True))
    assert all(w.is_inference() for w in pol._packed.weights.values())
    ids = torch.tensor([[5, 6, 7, 8, 9]])
    grads = {}
    for use in (True, False):
        pol.pack_weights = use
        pol.model.zero_grad()
        with pol.train_forward():
            pol.model(input_ids=ids).logits.logsumexp(-1).sum().backward()
        grads[use] = {n: p.grad.clone() for n, p in pol.model.named_parameters() if p.grad is not None}
    assert len(grads[True]) > 10
    for name, want in grads[False].items():
        torch.testing.assert_close(grads[True][name], want, rtol=1e-4, atol=1e-6)


def test_trainer_gradients_match_plain_linear(tiny_model_dir, tmp_path):
    """A whole APPO mini-batch (tree-packed, branch rows trained, clip active): the same gradients either way."""
    from test_tree_packing import agent_tree, make_trainer

    grads, stats = {}, {}
    for use in (True, False):
        trainer = make_trainer(tiny_model_dir, tmp_path / str(use), "tree", 4)
        trainer.policy.pack_weights = use
        rows_t = agent_tree(trainer.policy.tokenizer)
        advs = trainer.credit(rows_t, trainer.cfg.algorithm)
        rows = [(t, a, train_mask(t, trainer.cfg.algorithm)) for t, a in zip(rows_t, advs, strict=True)]
        old = [c + 0.3 for c in trainer._rows_logprobs("policy", rows_t)]
        stats[use] = trainer.accumulate_grads(rows, np.arange(len(rows)), old, None)
        grads[use] = {n: p.grad for n, p in trainer.policy.model.named_parameters() if p.grad is not None}
    assert stats[True]["clip_frac"] > 0 and grads[True].keys() == grads[False].keys() and len(grads[True]) > 10
    for k in stats[False]:
        assert stats[True][k] == pytest.approx(stats[False][k], rel=1e-4, abs=1e-5), k
    for name, want in grads[False].items():
        scale = float(want.abs().max())
        torch.testing.assert_close(grads[True][name], want, atol=1e-4 * scale + 1e-9, rtol=1e-3)


def test_config_turns_them_off(tiny_model_dir):
    """`model.reordered_weights=false`: plain F.linear everywhere, no copies made."""
    from juncture.config import load_config

    cfg = load_config(None, [f"model.path={tiny_model_dir}", "model.reordered_weights=false"])
    policy = HFPolicy.load(cfg.model)
    assert not policy.pack_weights
    policy.generate([rand_tokens(12, 1)], [4], SamplingParams(), torch.Generator().manual_seed(0))
    with policy.train_forward():
        assert all("forward" not in vars(m) for m in policy.model.modules())
    assert not policy._packed.weights
