"""Branching strategies on hand-built rollout trees: Ω^BS, BS, fork positions, fallback, constraints."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from juncture.branching import BRANCHING, BranchContext, ForkPoint, make_branch
from juncture.branching.scores import omega_bs, rollout_scores
from juncture.branching.spans import fork_metrics, tag_spans
from juncture.config import AlgorithmConfig, ConfigError, OmegaBSConfig, load_config
from juncture.tree import Source, ToolCall, Trajectory

SPACE = 13  # the fake tokenizer decodes this id to " "


class FakeTokenizer:
    def __init__(self, text: dict[int, str] | None = None):
        self.text = text or {}

    def decode(self, ids):
        return "".join(self.text.get(i, " " if i == SPACE else "a") for i in ids)

    def __len__(self):
        return 100


def build(tid: str, segments, group="g", prompt=(1, 2)) -> Trajectory:
    """segments: ("m", tokens, entropies) for model text, ("t", tokens) for a tool result."""
    t = Trajectory.from_prompt(list(prompt), tid, group, "task")
    for seg in segments:
        if seg[0] == "m":
            t.append(seg[1], Source.MODEL, [-1.0] * len(seg[1]), seg[2])
        else:
            start = len(t)
            t.append(seg[1], Source.TOOL)
            t.tool_calls.append(ToolCall("python", "q", "out", True, None, t.turn, start, len(t)))
            t.new_turn()
    t.check()
    return t


def tree(a_space=False):
    """Two initial rollouts of one prompt, each with a tool result in the middle.

    A: prompt 0-1 | model 2,3 | tool 4,5 | model 6,7     H = [2, 0, 2, 0]
    B: prompt 0-1 | model 2   | tool 3   | model 4,5,6   H = [1, 4, 3, 0]
    """
    a = build("A", [("m", [20, SPACE if a_space else 21], [2.0, 0.0]), ("t", [90, 91]), ("m", [22, 23], [2.0, 0.0])])
    b = build("B", [("m", [30], [1.0]), ("t", [92]), ("m", [31, 32, 33], [4.0, 3.0, 0.0])])
    return a, b


# log π_cur − log π_ref per token; tool positions hold junk that must be ignored
RATIOS = {"A": [np.nan, np.nan, 1.0, 0.0, 5.0, 5.0, -1.0, 0.5], "B": [np.nan, np.nan, -1.0, 7.0, 0.4, 0.0, 0.0]}


def ctx_for(**overrides) -> BranchContext:
    cfg = AlgorithmConfig(branching="appo", credit="appo", group_size=5, n_initial=2)
    for key, value in overrides.items():
        node = cfg
        *path, last = key.split(".")
        for p in path:
            node = getattr(node, p)
        setattr(node, last, value)
    return BranchContext(cfg, np.random.default_rng(0), FakeTokenizer(),
                         lambda trajs: [np.array(RATIOS[t.traj_id]) for t in trajs])


def points(forks):
    return [(f.parent.traj_id, f.position, f.origin) for f in forks]


def test_omega_bs_and_branching_score_by_hand():
    a, b = tree()
    ctx = ctx_for()
    sa = rollout_scores(a, ctx, np.array(RATIOS["A"]), with_omega=True)
    sb = rollout_scores(b, ctx, np.array(RATIOS["B"]), with_omega=True)
    # A, γ = 1, suffix sums over model tokens 7, 6, 3, 2 (tool tokens 4, 5 skipped):
    #   S7 = 0.5, S6 = -1 + 0.5 = -0.5, S3 = 0 + S6 = -0.5, S2 = 1 + S3 = 0.5
    #   Ω = clip(exp(S), 0.8, 1.2) = [1.2, 0.8, 0.8, 1.2]  (e^0.5 = 1.65, e^-0.5 = 0.61)
    assert sa.valid.tolist() == [2, 3, 6, 7]
    assert sa.omega == pytest.approx([1.2, 0.8, 0.8, 1.2])
    # z-scores: Ω mean 1, std 0.2 -> [1, -1, -1, 1]; H = [2, 0, 2, 0]: mean 1, std 1 -> [1, -1, 1, -1]
    assert sa.z_omega == pytest.approx([1, -1, -1, 1], abs=1e-4)
    assert sa.z_h == pytest.approx([1, -1, 1, -1], abs=1e-4)
    assert sa.bs == pytest.approx([1, 1, -1, -1], abs=1e-4)
    # B: S6 = 0, S5 = 0, S4 = 0.4, S2 = -1 + 0.4 = -0.6 (tool token 3 skipped)
    #   Ω = [0.8, 1.2, 1.0, 1.0]: mean 1, std sqrt(0.02) -> Z(Ω) = [-√2, √2, 0, 0]
    #   H = [1, 4, 3, 0]: mean 2, std sqrt(2.5) -> Z(H) = [-0.632, 1.265, 0.632, -1.265]
    #   BS = [0.894, 1.789, 0, 0]
    assert sb.omega == pytest.approx([0.8, 1.2, 1.0, 1.0])
    assert sb.z_omega == pytest.approx([-math.sqrt(2), math.sqrt(2), 0, 0], abs=1e-4)
    assert sb.z_h == pytest.approx([-0.632456, 1.264911, 0.632456, -1.264911], abs=1e-4)
    assert sb.bs == pytest.approx([0.894427, 1.788854, 0, 0], abs=1e-4)


def test_appo_selection_by_hand():
    a, b = tree()
    appo = BRANCHING.get("appo")
    # strict = Z(H) > 0 and Z(Ω) > 0: A2 (BS 1) and B4 (BS 1.789); A3 has BS 1 from two negative z-scores.
    # Top-3: B4, A2, then the fallback's best remaining: A3 (1.0) before B2 (0.894).
    ctx = ctx_for()
    assert points(appo([a, b], 3, ctx)) == [("B", 4, "strict"), ("A", 2, "strict"), ("A", 3, "fill")]
    assert ctx.metrics["fork/omega_degenerate"] == 0 and ctx.metrics["fork/strict_candidates_per_prompt"] == 2
    # a whitespace token is never a candidate: A3 -> the fill is B2
    a_ws, b2 = tree(a_space=True)
    assert points(appo([a_ws, b2], 3, ctx_for()))[2] == ("B", 2, "fill")
    # min_distance 2: A3 is 1 token from A2, B2 is 2 from B4
    assert points(appo([a, b], 3, ctx_for(**{"selection.min_distance": 2})))[2] == ("B", 2, "fill")
    # one point per rollout: the fill finds nothing, the third branch repeats B4
    assert points(appo([a, b], 3, ctx_for(**{"selection.max_per_rollout": 1}))) == [
        ("B", 4, "strict"), ("A", 2, "strict"), ("B", 4, "duplicate")]


def test_fallback_modes_by_hand():
    a, b = tree(a_space=True)  # 7 eligible positions
    full = appo_points(a, b, 10, "fill_then_duplicate")
    # strict B4, A2; fill by BS: B2 0.894, B5 0, B6 0, A6 -1, A7 -1; then B4, A2, B2 again
    assert [p[:2] for p in full] == [("B", 4), ("A", 2), ("B", 2), ("B", 5), ("B", 6), ("A", 6), ("A", 7),
                                     ("B", 4), ("A", 2), ("B", 2)]
    assert [p[2] for p in full].count("duplicate") == 3
    assert len(appo_points(a, b, 10, "fill_only")) == 7
    assert len(appo_points(a, b, 10, "none")) == 2


def appo_points(a, b, budget, fallback):
    return points(BRANCHING.get("appo")([a, b], budget, ctx_for(**{"selection.fallback": fallback})))


def test_degenerate_omega_by_hand():
    a, b = tree()
    appo = BRANCHING.get("appo")
    ctx = ctx_for()
    ctx.log_ratio = lambda trajs: None  # previous_step before any update: Ω ≡ 1
    # entropy_only: A strict A2, A6 (Z(H) = 1); B strict B4 (1.265), B5 (0.632) -> B4, A2, A6 (stable tie order)
    assert points(appo([a, b], 3, ctx)) == [("B", 4, "strict"), ("A", 2, "strict"), ("A", 6, "strict")]
    assert ctx.metrics["fork/omega_degenerate"] == 2 and ctx.metrics["fork/omega_std"] == 0
    # fallback: BS ≡ 0 and nothing is strict; ties keep rollout and position order
    ctx = ctx_for(omega_degenerate="fallback")
    ctx.log_ratio = lambda trajs: None
    assert points(appo([a, b], 3, ctx)) == [("A", 2, "fill"), ("A", 3, "fill"), ("A", 6, "fill")]
    ctx = ctx_for(omega_degenerate="error")
    ctx.log_ratio = lambda trajs: None
    with pytest.raises(RuntimeError, match="constant"):
        appo([a, b], 3, ctx)


def test_ablation_strategies_by_hand():
    a, b = tree()
    # entropy_only = the degenerate ranking above
    assert points(BRANCHING.get("entropy")([a, b], 3, ctx_for()))[:3] == [
        ("B", 4, "strict"), ("A", 2, "strict"), ("A", 6, "strict")]
    # omega_only: Z(Ω) > 0 at A2 (1), A7 (1), B4 (√2)
    assert points(BRANCHING.get("omega")([a, b], 3, ctx_for())) == [
        ("B", 4, "strict"), ("A", 2, "strict"), ("A", 7, "strict")]
    # tool_boundary: response starts A2, B2 and first tokens after results A6, B4; by Z(H): B4 1.265, A2 1, A6 1, B2 -0.632
    tb = BRANCHING.get("tool_boundary")
    assert points(tb([a, b], 2, ctx_for())) == [("B", 4, "strict"), ("A", 2, "strict")]
    assert [p[:2] for p in points(tb([a, b], 5, ctx_for()))] == [("B", 4), ("A", 2), ("A", 6), ("B", 2), ("B", 4)]
    # ARPO's rule with α = 1: every tool boundary preferred, the response starts only fill
    arpo = points(tb([a, b], 4, ctx_for(**{"tool_boundary.branch_probability": 1.0})))
    assert arpo == [("B", 4, "strict"), ("A", 6, "strict"), ("A", 2, "fill"), ("B", 2, "fill")]
    # beam_size 3: each preferred boundary takes two branches before the next one, then the fill
    beam = {"tool_boundary.branch_probability": 1.0, "tool_boundary.beam_size": 3}
    assert points(tb([a, b], 6, ctx_for(**beam))) == [("B", 4, "strict"), ("B", 4, "strict"), ("A", 6, "strict"),
                                                      ("A", 6, "strict"), ("A", 2, "fill"), ("B", 2, "fill")]
    assert points(tb([a, b], 3, ctx_for(**{"tool_boundary.beam_size": 3}))) == [
        ("B", 4, "strict"), ("B", 4, "strict"), ("A", 2, "strict")]
    # random: the generator's choice, reproducible
    r1, r2 = (points(BRANCHING.get("random")([a, b], 3, ctx_for())) for _ in range(2))
    assert r1 == r2 and len(set(r1)) == 3


def test_no_fork_where_a_kept_fork_token_leaves_no_budget():
    """With agent.max_new_tokens = 4, A7 and B6 (each rollout's 4th model token) cannot be continued from when the
    branch keeps its fork token: omega_only's third pick A7 gives way to the fill's best, B5 (Z(Ω) 0)."""
    a, b = tree()
    omega = BRANCHING.get("omega")
    ctx = ctx_for()
    ctx.max_new_tokens = 4
    assert points(omega([a, b], 3, ctx)) == [("B", 4, "strict"), ("A", 2, "strict"), ("B", 5, "fill")]
    ctx = ctx_for(**{"branch.include_token": False})  # the branch resamples A7 itself: budget left
    ctx.max_new_tokens = 4
    assert points(omega([a, b], 3, ctx))[2] == ("A", 7, "strict")
    ctx = ctx_for()
    ctx.max_new_tokens = 5  # one token of room after A7
    assert points(omega([a, b], 3, ctx))[2] == ("A", 7, "strict")


def test_include_token_false_resamples_the_selected_token():
    a, _ = tree()
    after_result = make_branch(ForkPoint(a, 6), "x", include_token=False)
    assert after_result.tokens == a.tokens[:6] and after_result.fork_pos == 5  # ends with the tool result
    assert after_result.tool_calls == a.tool_calls and after_result.turn == 1
    first = make_branch(ForkPoint(a, 2), "y", include_token=False)
    assert first.tokens == [1, 2] and first.fork_pos == 1 and not first.tool_calls
    kept = make_branch(ForkPoint(a, 6), "z")
    assert kept.tokens == a.tokens[:7] and kept.fork_pos == 6


def test_spans_and_fork_metrics():
    # "<think>" "x" "</think>" "<python>" "1" "</python>" | result | "ok"
    text = {40: "<think>", 41: "x", 42: "</think>", 43: "<python>", 44: "1", 45: "</python>", 46: "ok"}
    t = build("T", [("m", [40, 41, 42, 43, 44, 45], [1.0] * 6), ("t", [90]), ("m", [46, 47], [1.0, 1.0])])
    piece = FakeTokenizer(text).decode
    think, call = tag_spans(t, lambda tok: piece([tok]))
    assert np.flatnonzero(think).tolist() == [2, 3, 4] and np.flatnonzero(call).tolist() == [5, 6, 7]
    forks = [ForkPoint(t, 3), ForkPoint(t, 6), ForkPoint(t, 9), ForkPoint(t, 10, "fill")]
    m = fork_metrics(forks, lambda tok: piece([tok]))
    assert (m["fork/where/think"], m["fork/where/tool_call"], m["fork/where/after_result"], m["fork/where/other"]) == (
        0.25, 0.25, 0.25, 0.25)
    assert m["fork/origin/fill"] == 0.25


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 60), st.floats(0.5, 1.0), st.one_of(st.none(), st.integers(1, 8)), st.integers(0, 2**31))
def test_omega_bs_matches_the_naive_formula(n, gamma, window, seed):
    rng = np.random.default_rng(seed)
    ratio, valid = rng.normal(0, 0.3, n), rng.random(n) < 0.7
    cfg = OmegaBSConfig(gamma=gamma, window=window, clip=(0.5, 2.0))
    naive = [sum(gamma ** (k - t) * ratio[k] for k in range(t, n if window is None else min(n, t + window)) if valid[k])
             for t in range(n)]
    assert omega_bs(ratio, valid, cfg) == pytest.approx(np.clip(np.exp(np.clip(naive, -20, 20)), 0.5, 2.0), rel=1e-9)


segment_lists = st.lists(st.tuples(st.sampled_from("mt"), st.integers(1, 5)), min_size=1, max_size=6).filter(
    lambda segs: any(kind == "m" for kind, _ in segs))


@settings(max_examples=60, deadline=None)
@given(st.lists(st.lists(segment_lists, min_size=1, max_size=3), min_size=1, max_size=3),
       st.sampled_from(["appo", "entropy", "omega", "random", "tool_boundary"]), st.integers(1, 6),
       st.integers(0, 4), st.one_of(st.none(), st.integers(1, 3)),
       st.sampled_from(["fill_then_duplicate", "fill_only", "none"]), st.integers(0, 2**31))
def test_fork_points_are_valid_and_respect_the_budget(groups, strategy, budget, min_distance, max_per_rollout,
                                                      fallback, seed):
    rng = np.random.default_rng(seed)
    trajs, ratios = [], {}
    for g, rollouts in enumerate(groups):
        for r, segs in enumerate(rollouts):
            built = [("m", list(range(20, 20 + n)), rng.gamma(1.0, 1.0, n).tolist()) if kind == "m" else ("t", [90] * n)
                     for kind, n in segs]
            t = build(f"g{g}r{r}", built, group=f"g{g}")
            trajs.append(t)
            ratios[t.traj_id] = rng.normal(0, 0.5, len(t))
    ctx = ctx_for(**{"selection.min_distance": min_distance, "selection.max_per_rollout": max_per_rollout,
                     "selection.fallback": fallback})
    ctx.log_ratio = lambda ts: [ratios[t.traj_id] for t in ts]
    forks = BRANCHING.get(strategy)(trajs, budget, ctx)
    for fp in forks:
        assert fp.parent.prompt_len <= fp.position and fp.parent.sources[fp.position] == Source.MODEL
    for g in range(len(groups)):
        mine = [fp for fp in forks if fp.parent.group_id == f"g{g}"]
        if fallback == "fill_then_duplicate":
            assert len(mine) == budget  # every rollout has a model token, so there is always a candidate
        else:
            assert len(mine) <= budget and all(fp.origin != "duplicate" for fp in mine)
        distinct = [fp for fp in mine if fp.origin != "duplicate"]
        assert len({(fp.parent.traj_id, fp.position) for fp in distinct}) == len(distinct)
        assert all((fp.parent.traj_id, fp.position) in {(d.parent.traj_id, d.position) for d in distinct}
                   for fp in mine)
        for t in (t for t in trajs if t.group_id == f"g{g}"):
            pos = sorted(fp.position for fp in distinct if fp.parent is t)
            if max_per_rollout is not None:
                assert len(pos) <= max_per_rollout
            assert all(q - p >= min_distance for p, q in zip(pos, pos[1:], strict=False))


def test_budget_configuration_is_validated():
    alg = load_config().algorithm  # the quickstart runs APPO with B = n − N_init > 0 branches per prompt
    assert (alg.branching, alg.credit) == ("appo", "appo") and alg.branch_budget == alg.group_size - alg.n_initial > 0
    assert AlgorithmConfig().initial_per_group == 4 and AlgorithmConfig().branch_budget == 0
    for overrides, message in [
        (["algorithm.group_size=4", "algorithm.n_initial=5"], "n_initial must be <= "),
        (["algorithm.branching=none", "algorithm.group_size=4", "algorithm.n_initial=2"], "needs a branching strategy"),
        (["algorithm.branching=appo", "algorithm.group_size=4", "algorithm.n_initial=4"], "branching=appo needs"),
        (["algorithm.omega_bs.clip=[1.2, 0.8]"], "omega_bs.clip"),
        (["algorithm.selection.exclude=[commas]"], "exclude"),
    ]:
        with pytest.raises(ConfigError, match=message):
            load_config(None, overrides)
