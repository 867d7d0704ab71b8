"""Branching strategies: choose where to fork new rollouts from existing ones."""

from juncture.branching import none  # noqa: F401  (registers "none")
from juncture.branching.base import BRANCHING, BranchingStrategy, ForkPoint

__all__ = ["BRANCHING", "BranchingStrategy", "ForkPoint"]
