"""`entropy`: the highest-entropy tokens (APPO's entropy_only ablation; TreeRL-style branching).

Strict candidates have Z(H) > 0 within their rollout; they are pooled per prompt and the top B by
Z(H) are taken, with the shared fallback.
"""

from __future__ import annotations

import numpy as np

from juncture.branching.base import BRANCHING, BranchContext, ForkPoint
from juncture.branching.scores import RolloutScores
from juncture.branching.select import Candidates, pooled_selection
from juncture.tree import Trajectory


def rank_entropy(s: RolloutScores, ctx: BranchContext) -> Candidates:
    strict = s.z_h > 0 if ctx.cfg.selection.require_positive_z else np.ones(len(s.valid), dtype=bool)
    return Candidates(s.traj, s.valid[s.eligible], s.z_h[s.eligible], strict[s.eligible])


@BRANCHING.register("entropy")
def entropy(trajs: list[Trajectory], budget_per_group: int, ctx: BranchContext) -> list[ForkPoint]:
    return pooled_selection(trajs, budget_per_group, ctx, rank_entropy)
