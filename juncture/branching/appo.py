"""`appo`: the Branching Score BS = Z(H)·Z(Ω^BS) (appo.md §5), and `omega`, its Ω-only ablation.

Strict candidates have Z(H) > 0 and Z(Ω) > 0; a product of two negative z-scores is positive too,
but only reaches the fallback. A rollout whose Ω is constant (Z(Ω) ≡ 0) follows
`omega_degenerate`: entropy_only ranks it by Z(H); fallback leaves it to the fallback.
"""

from __future__ import annotations

import numpy as np

from juncture.branching.base import BRANCHING, BranchContext, ForkPoint
from juncture.branching.entropy import rank_entropy
from juncture.branching.scores import RolloutScores
from juncture.branching.select import Candidates, pooled_selection
from juncture.tree import Trajectory


def _rank(s: RolloutScores, ctx: BranchContext, score: np.ndarray, strict: np.ndarray) -> Candidates:
    if s.degenerate and ctx.cfg.omega_degenerate == "entropy_only":
        return rank_entropy(s, ctx)
    if not ctx.cfg.selection.require_positive_z:
        strict = np.ones(len(s.valid), dtype=bool)
    return Candidates(s.traj, s.valid[s.eligible], score[s.eligible], strict[s.eligible])


def rank_bs(s: RolloutScores, ctx: BranchContext) -> Candidates:
    return _rank(s, ctx, s.bs, (s.z_h > 0) & (s.z_omega > 0))


def rank_omega(s: RolloutScores, ctx: BranchContext) -> Candidates:
    return _rank(s, ctx, s.z_omega, s.z_omega > 0)


@BRANCHING.register("appo")
def appo(trajs: list[Trajectory], budget_per_group: int, ctx: BranchContext) -> list[ForkPoint]:
    return pooled_selection(trajs, budget_per_group, ctx, rank_bs, with_omega=True)


@BRANCHING.register("omega")
def omega_only(trajs: list[Trajectory], budget_per_group: int, ctx: BranchContext) -> list[ForkPoint]:
    return pooled_selection(trajs, budget_per_group, ctx, rank_omega, with_omega=True)


appo.uses_omega = omega_only.uses_omega = True
