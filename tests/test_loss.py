"""Hand-worked checks of the PPO/GRPO loss, its aggregation modes and the GRPO advantages."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from juncture.config import AlgorithmConfig, LossConfig
from juncture.credit import CREDIT
from juncture.train.loss import k3_kl, policy_loss, token_weights
from juncture.tree import Source, Trajectory


def t(x):
    return torch.tensor([x], dtype=torch.float32)


def test_clip_higher_and_dual_clip_by_hand():
    cfg = LossConfig(clip_low=0.2, clip_high=0.28, dual_clip_c=3.0)
    # token 1: A=+1, ratio 1.5 -> clipped at 1.28 -> loss -1.28
    # token 2: A=-1, ratio 0.5 -> clipped at 0.8  -> loss  0.8
    # token 3: A=-1, ratio 5.0 -> PPO gives 5.0, dual clip caps at 3.0
    # token 4: A=+2, ratio 1.0 -> loss -2.0 (inside the clip range)
    ratios = [1.5, 0.5, 5.0, 1.0]
    adv = t([1.0, -1.0, -1.0, 2.0])
    logp = torch.log(t(ratios)).requires_grad_()
    w = torch.full((1, 4), 0.25)
    loss, stats = policy_loss(logp, torch.zeros(1, 4), adv, w, cfg)
    assert loss.item() == pytest.approx((-1.28 + 0.8 + 3.0 - 2.0) / 4)
    assert stats["clip_frac"].item() == 3  # three of four tokens clipped (sum over tokens)
    loss.backward()
    # only the unclipped token has a gradient: d/dlogp(-A * ratio) * w = -2 * 1 * 0.25
    assert logp.grad.tolist()[0] == pytest.approx([0.0, 0.0, 0.0, -0.5])


def test_without_dual_clip_the_ppo_loss_is_unbounded():
    cfg = LossConfig(dual_clip_c=None)
    loss, _ = policy_loss(torch.log(t([5.0])), torch.zeros(1, 1), t([-1.0]), torch.ones(1, 1), cfg)
    assert loss.item() == pytest.approx(5.0)


def test_k3_kl_by_hand_and_in_loss():
    # ref - logp = log 2 -> exp(log 2) - log 2 - 1
    assert k3_kl(t([0.0]), torch.log(t([2.0]))).item() == pytest.approx(2 - math.log(2) - 1)
    cfg = LossConfig(kl_coef=0.5)
    loss, stats = policy_loss(t([0.0]), t([0.0]), t([0.0]), torch.ones(1, 1), cfg, ref_logp=torch.log(t([2.0])))
    assert loss.item() == pytest.approx(0.5 * (1 - math.log(2)))
    assert stats["kl"].item() == pytest.approx(1 - math.log(2))


def test_token_weights_modes_by_hand():
    masks = [np.array([1, 1, 0]), np.array([0, 1, 0])]
    tm = token_weights(masks, "token-mean", 10)
    assert [w.tolist() for w in tm] == [[1 / 3, 1 / 3, 0], [0, 1 / 3, 0]]
    sm = token_weights(masks, "seq-mean-token-mean", 10)
    assert [w.tolist() for w in sm] == [[0.25, 0.25, 0], [0, 0.5, 0]]
    dr = token_weights(masks, "seq-mean-token-sum-norm", 10)
    assert [w.tolist() for w in dr] == [[0.05, 0.05, 0], [0, 0.05, 0]]


@given(st.lists(st.lists(st.integers(0, 1), min_size=1, max_size=6), min_size=1, max_size=5),
       st.sampled_from(["token-mean", "seq-mean-token-mean"]))
def test_weights_sum_to_one_whatever_the_split(masks, agg):
    masks = [np.array(m) for m in masks]
    total = sum(w.sum() for w in token_weights(masks, agg, 8))
    has_tokens = [m.sum() > 0 for m in masks]
    if agg == "token-mean":
        assert total == pytest.approx(1.0 if any(has_tokens) else 0.0)
    else:
        assert total == pytest.approx(sum(has_tokens) / len(masks))


def _traj(tid, group, reward, n_model=2):
    tr = Trajectory.from_prompt([1, 2], tid, group, "task")
    tr.append(list(range(n_model)), Source.MODEL, [0.0] * n_model, [0.0] * n_model)
    tr.append([9], Source.TOOL)
    tr.reward = reward
    return tr


def test_grpo_advantages_by_hand():
    trajs = [_traj("a", "g", 1.0), _traj("b", "g", 0.0), _traj("c", "g", 0.0), _traj("d", "g", 1.0), _traj("e", "h", 0.3)]
    advs = CREDIT.get("grpo")(trajs, AlgorithmConfig())
    # group g: mean 0.5, population std 0.5 -> ±1; group h (single rollout): 0
    expected = [1, -1, -1, 1, 0]
    for traj, adv, a in zip(trajs, advs, expected, strict=True):
        assert adv.tolist() == pytest.approx([0, 0, a, a, 0], abs=1e-5)  # prompt and tool tokens get 0
        assert len(adv) == len(traj.tokens)
    dr = CREDIT.get("grpo")(trajs, AlgorithmConfig(norm_adv_by_std=False))
    assert dr[0][2] == pytest.approx(0.5)


@given(st.lists(st.floats(-5, 5), min_size=2, max_size=8))
def test_grpo_advantages_are_centred(rewards):
    trajs = [_traj(str(i), "g", r) for i, r in enumerate(rewards)]
    values = [a[2] for a in CREDIT.get("grpo")(trajs, AlgorithmConfig())]
    assert sum(values) == pytest.approx(0.0, abs=1e-3)


def test_unknown_registry_name_lists_choices():
    with pytest.raises(KeyError, match="grpo"):
        CREDIT.get("nope")
