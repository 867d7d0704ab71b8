"""APPO: dual-group advantages with prefix credit (appo.md §7.2).

Initial rows are normalised among the prompt's initial rows, branch rows among branches. The
shared prefix of an initial rollout (up to and including each fork position) also receives the
mean advantage of the branches forked there or later, so tokens that lead to good continuations
get credit from the continuations actually drawn from them:

    A_{i,t} = A_i^init + mean_{b: source(b) = i, t <= fork_b} A_b^br    (A_i^init alone if no such b)

Branch rows get 0 unless branch.train_on_branch_rows, then A_b^br on their own tokens. The
procedure-level scaling by Ω^loss happens inside the loss (train/loss.py), and the reference's
reward-scale factor M (a no-op, defect D3) is not ported.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np

from juncture.config import AlgorithmConfig
from juncture.credit.base import CREDIT, train_mask
from juncture.credit.grpo import group_relative
from juncture.tree import Trajectory, group_by


def prefix_bonus(length: int, forks: list[tuple[int, float]]) -> np.ndarray:
    """Per position t: the mean of the advantages a of (fork_pos, a) with t <= fork_pos, else 0; O(L + B)."""
    total, count = np.zeros(length + 1), np.zeros(length + 1)
    for pos, a in forks:
        total[pos] += a
        count[pos] += 1
    total, count = total[::-1].cumsum()[::-1][:length], count[::-1].cumsum()[::-1][:length]
    return np.divide(total, count, out=np.zeros(length), where=count > 0)


def branch_advantages(branches: list[Trajectory], sources: dict[str, Trajectory], cfg: AlgorithmConfig) -> dict[str, float]:
    """A_b^br: pooled over the prompt's branches, or per source rollout / per fork point, where the
    source's own reward joins the statistics (it is one more continuation of the same prefix)."""
    mode = cfg.advantage.branch_norm
    if mode == "pooled":
        rewards = np.array([b.reward for b in branches], dtype=np.float64)
        return {b.traj_id: float(a) for b, a in zip(branches, group_relative(rewards, cfg.norm_adv_by_std), strict=True)}
    subgroups: dict[tuple, list[Trajectory]] = defaultdict(list)
    for b in branches:
        subgroups[(b.parent_id, b.fork_pos) if mode == "per_point" else (b.parent_id,)].append(b)
    out = {}
    for key, members in subgroups.items():
        rewards = np.array([sources[key[0]].reward] + [b.reward for b in members], dtype=np.float64)
        for b, a in zip(members, group_relative(rewards, cfg.norm_adv_by_std)[1:], strict=True):
            out[b.traj_id] = float(a)
    return out


@CREDIT.register("appo")
def appo(trajs: list[Trajectory], cfg: AlgorithmConfig) -> list[np.ndarray]:
    adv: dict[str, np.ndarray] = {}
    for group in group_by(trajs).values():
        initial = [t for t in group if t.kind != "branch"]
        branches = [t for t in group if t.kind == "branch"]
        a_init = group_relative(np.array([t.reward for t in initial], dtype=np.float64), cfg.norm_adv_by_std)
        a_br = branch_advantages(branches, {t.traj_id: t for t in initial}, cfg) if branches else {}
        for t, a in zip(initial, a_init, strict=True):
            forks = [(b.fork_pos, a_br[b.traj_id]) for b in branches if b.parent_id == t.traj_id]
            bonus = prefix_bonus(len(t), forks) if cfg.advantage.prefix_credit else 0.0
            adv[t.traj_id] = ((a + bonus) * train_mask(t, cfg)).astype(np.float32)
        for b in branches:
            adv[b.traj_id] = (a_br[b.traj_id] * train_mask(b, cfg)).astype(np.float32)
    return [adv[t.traj_id] for t in trajs]
