"""Per-rollout signals for choosing fork points: entropy H, future value Ω^BS, their z-scores.

All arrays are indexed by the rollout's valid positions: its response tokens sampled by the
model. Tool output can never be a candidate, by construction (fix of spec defect D1).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from juncture.branching.base import BranchContext
from juncture.branching.spans import excluded
from juncture.config import OmegaBSConfig
from juncture.train.loss import discounted_suffix_sum
from juncture.tree import Source, Trajectory

Z_EPS = 1e-6
DEGENERATE_STD = 1e-8


def zscore(x: np.ndarray) -> np.ndarray:
    """(x − mean) / (population std + 1e-6), as the reference computes it."""
    return (x - x.mean()) / (x.std() + Z_EPS) if len(x) else x


def omega_bs(log_ratio: np.ndarray, valid: np.ndarray, cfg: OmegaBSConfig) -> np.ndarray:
    """Ω^BS_t = clip(exp(clamp(Σ_{k>=t, valid k} γ^(k−t)·log r_k, ±20)), lo, hi) for every token.

    `log_ratio` and `valid` are full-length; k − t counts token positions, tool tokens included
    (they add nothing to the sum), as in the reference. O(L) by a reverse scan.
    """
    x = np.where(valid, np.nan_to_num(np.asarray(log_ratio, dtype=np.float64)), 0.0)
    s = discounted_suffix_sum(torch.from_numpy(x), cfg.gamma, cfg.window).numpy()
    return np.clip(np.exp(np.clip(s, -20.0, 20.0)), *cfg.clip)


@dataclass
class RolloutScores:
    traj: Trajectory
    valid: np.ndarray  # absolute positions of the model tokens of the response
    eligible: np.ndarray  # per valid position: not excluded by selection.exclude
    entropy: np.ndarray
    z_h: np.ndarray
    omega: np.ndarray | None = None
    z_omega: np.ndarray | None = None
    degenerate: bool = False  # std(Ω) ≈ 0: Z(Ω) is set to 0

    @property
    def bs(self) -> np.ndarray:
        return self.z_h * self.z_omega


def rollout_scores(traj: Trajectory, ctx: BranchContext, log_ratio: np.ndarray | None = None,
                   with_omega: bool = False) -> RolloutScores:
    """Entropy z-scores, and with `with_omega` Ω^BS (≡ 1 without a log-ratio) and its z-scores."""
    sources = np.asarray(traj.sources)
    valid_mask = sources == Source.MODEL
    valid = np.flatnonzero(valid_mask)
    h = np.asarray(traj.entropies, dtype=np.float64)[valid]
    s = RolloutScores(traj, valid, ~excluded(traj, valid, ctx.cfg.selection.exclude, ctx.piece), h, zscore(h))
    if with_omega:
        ratio = np.zeros(len(traj)) if log_ratio is None else log_ratio
        s.omega = omega_bs(ratio, valid_mask, ctx.cfg.omega_bs)[valid]
        s.degenerate = bool(len(valid)) and bool(s.omega.std() < DEGENERATE_STD)
        s.z_omega = np.zeros_like(s.omega) if s.degenerate else zscore(s.omega)
    return s
