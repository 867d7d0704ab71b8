"""The branching-strategy interface and registry."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from juncture.registry import Registry
from juncture.tree import Trajectory


@dataclass(frozen=True)
class ForkPoint:
    parent: Trajectory
    position: int  # token index in parent.tokens; the branch keeps tokens[: position + 1]


class BranchingStrategy(Protocol):
    def __call__(self, trajs: list[Trajectory], budget_per_group: int) -> list[ForkPoint]:
        """Fork points for completed initial rollouts; at most `budget_per_group` per group."""


BRANCHING: Registry[BranchingStrategy] = Registry("branching strategy")
