"""The credit-assigner interface and registry."""

from __future__ import annotations

from typing import Protocol

import numpy as np

from juncture.config import AlgorithmConfig
from juncture.registry import Registry
from juncture.tree import Trajectory


class CreditAssigner(Protocol):
    def __call__(self, trajs: list[Trajectory], cfg: AlgorithmConfig) -> list[np.ndarray]:
        """One float array per trajectory, aligned with its tokens (0 where loss_mask is 0)."""


CREDIT: Registry[CreditAssigner] = Registry("credit assigner")


def token_advantages(traj: Trajectory, value: float) -> np.ndarray:
    """Broadcast a sequence-level advantage over the trajectory's loss-mask tokens."""
    return np.asarray(traj.loss_mask, dtype=np.float32) * np.float32(value)
