"""APPO's dual-group advantages with prefix credit, by hand and against the naive definition."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from juncture.branching import ForkPoint, make_branch
from juncture.config import AlgorithmConfig
from juncture.credit import CREDIT, train_mask
from juncture.tree import Source, ToolCall, Trajectory

EPS = 1e-6


def build(tid, segments, reward, group="g"):
    """segments: ("m", n) model tokens or ("t", n) a tool result."""
    t = Trajectory.from_prompt([1, 2], tid, group, "task")
    for kind, n in segments:
        if kind == "m":
            t.append([20] * n, Source.MODEL, [-1.0] * n, [1.0] * n)
        else:
            start = len(t)
            t.append([90] * n, Source.TOOL)
            t.tool_calls.append(ToolCall("python", "q", "o", True, None, t.turn, start, len(t)))
            t.new_turn()
    t.reward = reward
    return t


def branch(parent, pos, tid, reward, n_new=2, include_token=True):
    b = make_branch(ForkPoint(parent, pos), tid, include_token)
    b.append([21] * n_new, Source.MODEL, [-1.0] * n_new, [1.0] * n_new)
    b.reward = reward
    return b


def hand_tree():
    """A (R=1): prompt 0-1 | model 2,3 | tool 4,5 | model 6,7;  B (R=0): prompt 0-1 | model 2 | tool 3 | model 4,5,6.
    Branches: b1 from A at 3 (R=1), b2 from A at 6 (R=0), b3 from B at 4 (R=1), b4 from B at 2 (R=0)."""
    a = build("A", [("m", 2), ("t", 2), ("m", 2)], 1.0)
    b = build("B", [("m", 1), ("t", 1), ("m", 3)], 0.0)
    return [a, b, branch(a, 3, "b1", 1.0), branch(a, 6, "b2", 0.0), branch(b, 4, "b3", 1.0), branch(b, 2, "b4", 0.0)]


def appo(trajs, **settings):
    """APPO advantages as lists, with `section.key=value` settings."""
    cfg = AlgorithmConfig(credit="appo")
    for key, value in settings.items():
        section, name = key.split(".")
        setattr(getattr(cfg, section), name, value)
    return [a.tolist() for a in CREDIT.get("appo")(trajs, cfg)]


def test_prefix_credit_by_hand():
    advs = appo(hand_tree())
    # A_init over {1, 0}: mean 0.5, std 0.5 -> A: +1, B: -1.   A_br pooled over {1, 0, 1, 0} -> b1 +1, b2 -1, b3 +1, b4 -1
    # A: t = 2, 3 are covered by b1 (fork 3) and b2 (fork 6): 1 + mean(1, -1) = 1;  t = 6 only by b2: 1 - 1 = 0;
    #    t = 7 by none: 1; tool tokens 4, 5 and the prompt: 0
    assert advs[0] == pytest.approx([0, 0, 1, 1, 0, 0, 0, 1], abs=1e-5)
    # B: t = 2 covered by b3 (fork 4) and b4 (fork 2): -1 + mean(1, -1) = -1;  t = 4 by b3: -1 + 1 = 0;  t = 5, 6: -1
    assert advs[1] == pytest.approx([0, 0, -1, 0, 0, -1, -1], abs=1e-5)
    assert all(not any(a) for a in advs[2:])  # branch rows: A = 0, masked
    # training the branch rows: only their own tokens after the fork, with A_br
    advs = appo(hand_tree(), **{"branch.train_on_branch_rows": True})
    assert advs[2] == pytest.approx([0, 0, 0, 0, 1, 1], abs=1e-5)  # b1 = A[:4] + 2 new tokens
    assert advs[3] == pytest.approx([0] * 7 + [-1, -1], abs=1e-5)  # b2 = A[:7] + 2 new tokens
    # without prefix credit: A_init broadcast over model tokens
    advs = appo(hand_tree(), **{"advantage.prefix_credit": False})
    assert advs[0] == pytest.approx([0, 0, 1, 1, 0, 0, 1, 1], abs=1e-5)
    assert advs[1] == pytest.approx([0, 0, -1, 0, -1, -1, -1], abs=1e-5)


def test_branch_normalisation_modes_by_hand():
    # per_source: A's continuations {R_A = 1, b1 = 1, b2 = 0}: mean 2/3, std √2/3 -> b1 = (1/3)/(√2/3) = 1/√2, b2 = -√2
    #   A at t = 2, 3: 1 + (1/√2 - √2)/2 = 1 - 1/(2√2);  t = 6: 1 - √2;  t = 7: 1
    r2 = math.sqrt(2)
    advs = appo(hand_tree(), **{"advantage.branch_norm": "per_source"})
    assert advs[0] == pytest.approx([0, 0, 1 - 1 / (2 * r2), 1 - 1 / (2 * r2), 0, 0, 1 - r2, 1], abs=1e-5)
    # per_point: b1 with A at fork 3 {1, 1} -> 0; b2 with A at fork 6 {1, 0} -> -1
    #   A at t = 2, 3: 1 + mean(0, -1) = 0.5;  t = 6: 1 - 1 = 0
    advs = appo(hand_tree(), **{"advantage.branch_norm": "per_point"})
    assert advs[0] == pytest.approx([0, 0, 0.5, 0.5, 0, 0, 0, 1], abs=1e-5)


def random_tree(data, n_initial):
    trajs, branches = [], []
    for i in range(n_initial):
        segs = data.draw(st.lists(st.tuples(st.sampled_from("mt"), st.integers(1, 4)), min_size=1, max_size=5).filter(
            lambda s: s[0][0] == "m"))
        trajs.append(build(f"r{i}", segs, data.draw(st.floats(-1, 1))))
    for j in range(data.draw(st.integers(0, 6))):
        parent = data.draw(st.sampled_from(trajs))
        pos = data.draw(st.sampled_from([k for k, s in enumerate(parent.sources) if s == Source.MODEL]))
        branches.append(branch(parent, pos, f"b{j}", data.draw(st.floats(-1, 1)), data.draw(st.integers(1, 3)),
                               data.draw(st.booleans())))
    return trajs, branches


@settings(max_examples=80, deadline=None)
@given(st.data(), st.integers(1, 3), st.booleans())
def test_prefix_credit_equals_the_naive_definition(data, n_initial, norm):
    initial, branches = random_tree(data, n_initial)
    advs = CREDIT.get("appo")(initial + branches, AlgorithmConfig(credit="appo", norm_adv_by_std=norm))

    def rel(rs):
        rs = np.array(rs, dtype=np.float64)
        c = rs - rs.mean()
        return c / (rs.std() + EPS) if norm else c

    a_init = dict(zip([t.traj_id for t in initial], rel([t.reward for t in initial]), strict=True))
    a_br = dict(zip([b.traj_id for b in branches], rel([b.reward for b in branches]), strict=True)) if branches else {}
    for t, adv in zip(initial, advs, strict=False):
        for pos in range(len(t)):
            covering = [a_br[b.traj_id] for b in branches if b.parent_id == t.traj_id and pos <= b.fork_pos]
            want = (a_init[t.traj_id] + (np.mean(covering) if covering else 0.0)) * t.loss_mask[pos]
            assert adv[pos] == pytest.approx(want, abs=1e-4)


@settings(max_examples=80, deadline=None)
@given(st.data(), st.integers(1, 3), st.sampled_from(["grpo", "appo"]), st.booleans(),
       st.sampled_from(["pooled", "per_source", "per_point"]))
def test_advantages_vanish_off_the_trained_tokens(data, n_initial, credit, on_branch_rows, branch_norm):
    initial, branches = random_tree(data, n_initial)
    cfg = AlgorithmConfig(credit=credit)
    cfg.branch.train_on_branch_rows = on_branch_rows
    cfg.advantage.branch_norm = branch_norm
    for t, adv in zip(initial + branches, CREDIT.get(credit)(initial + branches, cfg), strict=True):
        mask = train_mask(t, cfg)
        assert len(adv) == len(t) and np.all(np.isfinite(adv))
        assert not adv[mask == 0].any() and not adv[np.asarray(t.loss_mask) == 0].any()
        if t.kind == "branch":
            assert not mask[: t.fork_pos + 1].any()
