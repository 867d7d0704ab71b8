"""Hand-worked checks of the PPO/GRPO loss, its aggregation modes, the GRPO advantages and APPO's Ω^loss."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from juncture.config import AlgorithmConfig, LossConfig, OmegaLossConfig
from juncture.credit import CREDIT
from juncture.train.loss import discounted_suffix_sum, k3_kl, omega_loss, policy_loss, token_weights
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


# ---- APPO: Ω^loss and the procedure-level scaling -----------------------------------------------


def test_omega_loss_by_hand():
    # decay_rate 1 -> γ = 0.5;  c = 3 -> only Δ <= log 3 = 1.0986 participates
    cfg = OmegaLossConfig(decay_rate=1.0, safety_thresh=4.0)
    # Δ = [0.1, 0.2, 0.5, 1.5], token 2 is not a loss token, token 3 does not participate:
    #   x = [0.1, 0.2, 0, 0] -> FutureKL = [0.1 + 0.5*0.2, 0.2, 0, 0] = [0.2, 0.2, 0, 0]
    #   exp = [1.221, 1.221, 1, 1] -> clip to [1, 1.2] (high only) = [1.2, 1.2, 1, 1]
    delta, mask = t([0.1, 0.2, 0.5, 1.5]), t([1.0, 1.0, 0.0, 1.0])
    omega, raw = omega_loss(delta, torch.zeros(1, 4), t([1.0, 1.0, 1.0, -1.0]), mask, cfg)
    assert omega.tolist()[0] == pytest.approx([1.2, 1.2, 1.0, 1.0])
    assert raw.tolist()[0] == pytest.approx([math.exp(0.2), math.exp(0.2), 1.0, 1.0])
    # symmetric clip [0.8, 1.2]: Δ = [-0.3, 1.5, 0.1, 0] -> x = [-0.3, 0, 0.1, 0]
    #   FutureKL = [-0.3 + 0.5*0.05, 0.5*0.1, 0.1, 0] = [-0.275, 0.05, 0.1, 0]
    #   exp = [0.760, 1.051, 1.105, 1] -> clip = [0.8, 1.051, 1.105, 1]
    #   token 1 has A < 0 and ratio e^1.5 = 4.48 > 4: capped at 1
    sym = OmegaLossConfig(decay_rate=1.0, safety_thresh=4.0, clip_high_only=False)
    omega, _ = omega_loss(t([-0.3, 1.5, 0.1, 0.0]), torch.zeros(1, 4), t([1.0, -1.0, 1.0, 1.0]), torch.ones(1, 4), sym)
    assert omega.tolist()[0] == pytest.approx([0.8, 1.0, math.exp(0.1), 1.0])


def test_procedure_level_scaling_in_the_loss_by_hand():
    cfg = LossConfig(clip_low=0.2, clip_high=0.28)
    omega = OmegaLossConfig(decay_rate=1.0, safety_thresh=4.0)
    logp = t([0.1, 0.2, 0.5, 1.5])  # old log-probs 0: ratio = e^Δ = [1.105, 1.221, 1.649, 4.482]
    adv, w = t([1.0, 1.0, 1.0, -1.0]), t([1 / 3, 1 / 3, 0.0, 1 / 3])
    # Ω = [1.2, 1.2, 1, 1] (test above), b = 1: Ã = A (1 + Ω) = [2.2, 2.2, 2, -2]
    #   t0: -2.2 * 1.105 ; t1: -2.2 * 1.221 (both inside the clip) ; t3: max(2 * 4.482, 2 * 1.28) = 8.963
    expected = (-2.2 * math.exp(0.1) - 2.2 * math.exp(0.2) + 2 * math.exp(1.5)) / 3
    loss, stats = policy_loss(logp, torch.zeros(1, 4), adv, w, cfg, omega=omega)
    assert loss.item() == pytest.approx(expected, rel=1e-5)
    assert stats["omega_loss"].item() == pytest.approx(3.4)  # summed over the 3 loss tokens: 1.2 + 1.2 + 1
    assert stats["omega_loss_clip_high"].item() == 2 and stats["omega_loss_clip_low"].item() == 0
    halved, _ = policy_loss(logp, torch.zeros(1, 4), adv, w, cfg, omega=OmegaLossConfig(
        decay_rate=1.0, safety_thresh=4.0, normalize_by_1_plus_b=True))
    assert halved.item() == pytest.approx(expected / 2, rel=1e-5)
    plain, _ = policy_loss(logp, torch.zeros(1, 4), adv, w, cfg, omega=OmegaLossConfig(weight_b=0.0))
    assert plain.item() == pytest.approx((-math.exp(0.1) - math.exp(0.2) + math.exp(1.5)) / 3, rel=1e-5)
    # first mini-batch of a step (old = θ): Ω = 1 everywhere, so Ã = 2A: -(2 * 1 + 2 * 0.5) / 2
    first, _ = policy_loss(torch.zeros(1, 2), torch.zeros(1, 2), t([1.0, 0.5]), t([0.5, 0.5]), cfg, omega=omega)
    assert first.item() == pytest.approx(-1.5)


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 1200), st.floats(0.3, 1.0), st.one_of(st.none(), st.integers(1, 300)), st.integers(0, 2**31))
def test_reverse_scan_equals_the_naive_quadratic_sum(n, gamma, window, seed):
    x = np.random.default_rng(seed).normal(size=(2, n))
    k, s = np.arange(n)[None, :], np.arange(n)[:, None]
    decay = np.where((k >= s) & ((k - s < window) if window else True), gamma ** np.maximum(k - s, 0), 0.0)
    naive = x @ decay.T  # y[b, t] = Σ_k decay[t, k] x[b, k], the reference's O(L²) matmul
    fast = discounted_suffix_sum(torch.from_numpy(x), gamma, window).numpy()
    assert np.allclose(fast, naive, rtol=1e-9, atol=1e-9)
