"""No branching: plain GRPO sampling, every rollout starts from the prompt."""

from __future__ import annotations

from juncture.branching.base import BRANCHING, BranchContext, ForkPoint
from juncture.tree import Trajectory


@BRANCHING.register("none")
def no_branching(trajs: list[Trajectory], budget_per_group: int, ctx: BranchContext) -> list[ForkPoint]:
    return []
