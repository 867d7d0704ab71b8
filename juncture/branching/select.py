"""Pooled top-B selection per prompt (appo.md §5.2), shared by every scoring strategy.

A strategy turns each rollout's scores into `Candidates` (positions, a ranking score, and which
positions pass its strict test); `select` pools one prompt's candidates, takes the best strict ones
greedily under `min_distance` / `max_per_rollout`, then falls back: fill with the best remaining
candidates, then repeat chosen points cyclically. Repeats add branches, not positions, so they are
exempt from the two constraints.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np

from juncture.branching.base import BranchContext, ForkPoint
from juncture.branching.scores import RolloutScores, rollout_scores
from juncture.config import SelectionConfig
from juncture.tree import Source, Trajectory, group_by

log = logging.getLogger(__name__)


@dataclass
class Candidates:
    traj: Trajectory
    positions: np.ndarray  # absolute token positions that may be chosen
    score: np.ndarray  # higher is better
    strict: np.ndarray  # bool: passes the strategy's strict test


def select(cands: list[Candidates], budget: int, cfg: SelectionConfig) -> list[ForkPoint]:
    """At most `budget` fork points for one prompt (exactly `budget` with fill_then_duplicate, given any candidate)."""
    owner = np.concatenate([np.full(len(c.positions), i) for i, c in enumerate(cands)])
    pos = np.concatenate([c.positions for c in cands])
    score = np.concatenate([c.score for c in cands])
    strict = np.concatenate([c.strict for c in cands])
    order = np.argsort(-score, kind="stable")  # ties keep rollout order, then position order
    taken = np.zeros(len(pos), dtype=bool)
    picked: dict[int, list[int]] = {}
    chosen: list[ForkPoint] = []

    def take(allowed: np.ndarray, origin) -> None:
        for i in order:
            if len(chosen) == budget:
                return
            if taken[i] or not allowed[i]:
                continue
            mine = picked.setdefault(int(owner[i]), [])
            if cfg.max_per_rollout is not None and len(mine) >= cfg.max_per_rollout:
                continue
            if any(abs(int(pos[i]) - p) < cfg.min_distance for p in mine):
                continue
            taken[i] = True
            mine.append(int(pos[i]))
            chosen.append(ForkPoint(cands[owner[i]].traj, int(pos[i]), origin))

    take(strict, "strict")
    if cfg.fallback != "none":
        take(~strict, "fill")
    if cfg.fallback == "fill_then_duplicate" and chosen:
        chosen += [replace(chosen[k % len(chosen)], origin="duplicate") for k in range(budget - len(chosen))]
    return chosen


Ranker = Callable[[RolloutScores, BranchContext], Candidates]


def pooled_selection(trajs: list[Trajectory], budget: int, ctx: BranchContext, rank: Ranker,
                     with_omega: bool = False) -> list[ForkPoint]:
    """Score every rollout, rank it with `rank`, select per prompt group; records metrics in ctx."""
    ratios = ctx.log_ratio(trajs) if with_omega and ctx.log_ratio is not None else None
    scores = [rollout_scores(t, ctx, None if ratios is None else ratios[i], with_omega) for i, t in enumerate(trajs)]
    degenerate = sum(int(s.degenerate) for s in scores)
    if degenerate and ctx.cfg.omega_degenerate == "error":
        raise RuntimeError(f"{degenerate} rollouts have a constant Ω^BS (omega_degenerate=error)")
    if degenerate:
        log.warning("%d of %d rollouts have a constant Ω^BS; handled as omega_degenerate=%s",
                    degenerate, len(scores), ctx.cfg.omega_degenerate)
    by_id = {s.traj.traj_id: s for s in scores}
    forks, n_strict, groups = [], 0, group_by(trajs)
    for group in groups.values():
        cands = [rank(by_id[t.traj_id], ctx) for t in group]
        if ctx.max_new_tokens is not None and ctx.cfg.branch.include_token:
            cands = [_with_budget_left(c, ctx.max_new_tokens) for c in cands]
        n_strict += sum(int(c.strict.sum()) for c in cands)
        forks += select(cands, budget, ctx.cfg.selection)
    ctx.metrics.update(_score_metrics(scores, with_omega))
    if with_omega:
        for s in scores:
            ctx.token_scores[s.traj.traj_id] = {"omega": _full(s, s.omega), "bs": _full(s, s.bs)}
    ctx.metrics["fork/omega_degenerate"] = degenerate
    ctx.metrics["fork/strict_candidates_per_prompt"] = n_strict / max(len(groups), 1)
    return forks


def _with_budget_left(c: Candidates, max_new_tokens: int) -> Candidates:
    """Drop positions a branch keeping its fork token could not continue from (the parent's last allowed token)."""
    used = np.cumsum(np.asarray(c.traj.sources) == Source.MODEL)  # model tokens in tokens[: i + 1]
    keep = used[c.positions] < max_new_tokens
    return Candidates(c.traj, c.positions[keep], c.score[keep], c.strict[keep])


def _full(s: RolloutScores, values: np.ndarray) -> np.ndarray:
    out = np.full(len(s.traj), np.nan)
    out[s.valid] = values
    return out


def _score_metrics(scores: list[RolloutScores], with_omega: bool) -> dict[str, float]:
    def stats(name: str, arrays: list[np.ndarray]) -> dict[str, float]:
        x = np.concatenate(arrays) if arrays else np.zeros(0)
        return {f"fork/{name}_mean": float(x.mean()) if len(x) else 0.0, f"fork/{name}_std": float(x.std()) if len(x) else 0.0}

    out = stats("H", [s.entropy for s in scores])
    if with_omega:
        out.update(stats("omega", [s.omega for s in scores]))
        out.update(stats("BS", [s.bs for s in scores]))
    return out
