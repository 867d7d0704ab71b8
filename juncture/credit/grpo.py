"""GRPO: each rollout's reward relative to its group (same prompt), broadcast to its tokens.

With branching, branch rows are ordinary group members for the baseline and are trained per
`branch.train_on_branch_rows` (their suffix only); ARPO's soft attribution, which also trains
every branch's copy of the shared prefix, is not reproduced.
"""

from __future__ import annotations

import numpy as np

from juncture.config import AlgorithmConfig
from juncture.credit.base import CREDIT, token_advantages
from juncture.tree import Trajectory, group_by

EPS = 1e-6


def group_relative(rewards: np.ndarray, norm_by_std: bool) -> np.ndarray:
    """(R - mean) / (population std + eps); without std normalisation (Dr. GRPO), R - mean."""
    centred = rewards - rewards.mean()
    return centred / (rewards.std() + EPS) if norm_by_std else centred


@CREDIT.register("grpo")
def grpo(trajs: list[Trajectory], cfg: AlgorithmConfig) -> list[np.ndarray]:
    value: dict[str, float] = {}
    for group in group_by(trajs).values():
        rewards = np.array([t.reward for t in group], dtype=np.float64)
        for t, a in zip(group, group_relative(rewards, cfg.norm_adv_by_std), strict=True):
            value[t.traj_id] = float(a)
    return [token_advantages(t, value[t.traj_id], cfg) for t in trajs]
