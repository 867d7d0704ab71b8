"""`tool_boundary`: ARPO-style branching where tool feedback arrives (baselines.md §3), chosen post hoc.

Candidates are the first response token and the first model token after each tool result, ranked
by Z(H) (or at random with `tool_boundary.rank=random`) and pooled per prompt. Without
`branch_probability` every candidate is strict. With it, ARPO's rule decides which tool boundaries
are preferred (see ToolBoundaryConfig); the others, and the response start (ARPO's fresh global
sample), only fill the budget. With `beam_size` > 2 a preferred boundary takes several branches
in a row, as ARPO's beam does. The whitespace/punctuation exclusions do not apply: the boundary
is the point, whatever its token.
"""

from __future__ import annotations

import math

import numpy as np

from juncture.branching.base import BRANCHING, BranchContext, ForkPoint
from juncture.branching.scores import RolloutScores
from juncture.branching.select import Candidates, pooled_selection
from juncture.branching.spans import after_result_positions
from juncture.tree import Trajectory


def _segment_entropy(s: RolloutScores, turns: np.ndarray, i: int, k: int) -> float:
    """Σ H over the first k model tokens of the turn starting at valid index i."""
    seg = s.entropy[i : i + k]
    return float(seg[turns[i : i + k] == turns[i]].sum())


def rank_boundaries(s: RolloutScores, ctx: BranchContext) -> Candidates:
    cfg = ctx.cfg.tool_boundary
    if not len(s.valid):
        return Candidates(s.traj, s.valid, np.zeros(0), np.zeros(0, dtype=bool))
    positions = np.array(list(dict.fromkeys([int(s.valid[0]), *after_result_positions(s.traj)])), dtype=np.int64)
    idx = np.searchsorted(s.valid, positions)
    score = s.z_h[idx] if cfg.rank == "entropy" else ctx.rng.random(len(idx))
    if cfg.branch_probability is None:
        strict = np.ones(len(idx), dtype=bool)
    else:
        turns = np.asarray(s.traj.turns)[s.valid]
        base = _segment_entropy(s, turns, 0, cfg.entropy_window)
        log_v = math.log(len(ctx.tokenizer))
        delta = np.array([(_segment_entropy(s, turns, i, cfg.entropy_window) - base) / log_v for i in idx])
        p = np.clip(cfg.branch_probability + cfg.entropy_weight * delta, 0.0, 1.0)
        strict = ctx.rng.random(len(idx)) <= p
        strict[0] = False
    return _beam(Candidates(s.traj, positions, score, strict), cfg.beam_size)


def _beam(c: Candidates, beam_size: int) -> Candidates:
    """Each strict boundary listed beam_size - 1 times (adjacent, so selection takes the copies together)."""
    reps = np.where(c.strict, beam_size - 1, 1)
    return Candidates(c.traj, np.repeat(c.positions, reps), np.repeat(c.score, reps), np.repeat(c.strict, reps))


@BRANCHING.register("tool_boundary")
def tool_boundary(trajs: list[Trajectory], budget_per_group: int, ctx: BranchContext) -> list[ForkPoint]:
    return pooled_selection(trajs, budget_per_group, ctx, rank_boundaries)
