"""`random`: B fork points per prompt drawn uniformly without replacement from its valid, non-excluded
positions (ranking by i.i.d. uniform keys is exactly that); seeded by the step's generator."""

from __future__ import annotations

import numpy as np

from juncture.branching.base import BRANCHING, BranchContext, ForkPoint
from juncture.branching.scores import RolloutScores
from juncture.branching.select import Candidates, pooled_selection
from juncture.tree import Trajectory


def rank_random(s: RolloutScores, ctx: BranchContext) -> Candidates:
    positions = s.valid[s.eligible]
    return Candidates(s.traj, positions, ctx.rng.random(len(positions)), np.ones(len(positions), dtype=bool))


@BRANCHING.register("random")
def random_points(trajs: list[Trajectory], budget_per_group: int, ctx: BranchContext) -> list[ForkPoint]:
    return pooled_selection(trajs, budget_per_group, ctx, rank_random)
