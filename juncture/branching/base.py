"""The branching-strategy interface and registry.

A strategy looks at the finished initial rollouts and returns up to `budget_per_group` fork
points per prompt group. What it may need beyond the trajectories (config, a seeded generator,
the tokenizer, the Trainer's Ω log-ratios) comes in a `BranchContext`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal, Protocol

import numpy as np

from juncture.config import AlgorithmConfig
from juncture.registry import Registry
from juncture.tree import Trajectory

Origin = Literal["strict", "fill", "duplicate"]


@dataclass(frozen=True)
class BranchEdit:
    """A branch that rewrites its prefix instead of copying it: cut before the fork point's model
    token and insert `insert` (injected, loss-masked tokens); `info` goes to metadata["edit"]."""

    op: str  # "mask" (a phrase removed), "inject" (a phrase inserted), "cut" (plain restart point)
    insert: tuple[int, ...] = ()
    info: dict = field(default_factory=dict, compare=False, hash=False)


@dataclass(frozen=True)
class ForkPoint:
    parent: Trajectory
    position: int  # the selected model token t_b (an index into parent.tokens); with an edit, the cut
    origin: Origin = "strict"  # strict candidate, fallback fill, or a repeated point
    edit: BranchEdit | None = None


@dataclass
class BranchContext:
    """Everything a strategy may use besides the rollouts.

    `log_ratio(trajs)` gives, per trajectory and token, log π_cur(a_t) − log π_ref(a_t) for the Ω^BS
    reference policy the Trainer was configured with (any value off model tokens), or None when no
    reference exists yet (step 0 of `previous_step`): Ω ≡ 1 then. The Trainer chooses both sides of
    the ratio, so a strategy never needs to know which policies they are.
    """

    cfg: AlgorithmConfig
    rng: np.random.Generator
    tokenizer: object = None
    log_ratio: Callable[[list[Trajectory]], list[np.ndarray] | None] | None = None
    metrics: dict[str, float] = field(default_factory=dict)  # strategies add their per-step statistics here
    # per trajectory id, full-length per-token signals the strategy ranked by (NaN off scored tokens), for the tree log
    token_scores: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)
    # agent.max_new_tokens: a branch that keeps its fork token needs model-token budget left after it
    max_new_tokens: int | None = None
    _pieces: dict[int, str] = field(default_factory=dict, repr=False)

    def piece(self, token: int) -> str:
        """The text of one token (cached; tokenizers are slow per call)."""
        text = self._pieces.get(token)
        if text is None:
            text = self._pieces[token] = self.tokenizer.decode([token]) if self.tokenizer is not None else ""
        return text


class BranchingStrategy(Protocol):
    """A strategy may also carry `annotate(trajs, ctx)`: the Trainer calls it once every row of the
    step (initial rollouts and branches) is scored, before the credit assigner runs (ReSum counts
    the summary phrases of the final rows there)."""

    def __call__(self, trajs: list[Trajectory], budget_per_group: int, ctx: BranchContext) -> list[ForkPoint]:
        """Fork points for completed initial rollouts: at most `budget_per_group` per prompt group."""


BRANCHING: Registry[BranchingStrategy] = Registry("branching strategy")


def uses_omega(strategy: BranchingStrategy) -> bool:
    """Whether the strategy asks for Ω^BS (the Trainer then keeps the reference weights around)."""
    return bool(getattr(strategy, "uses_omega", False))


def make_branch(fp: ForkPoint, traj_id: str, include_token: bool = True) -> Trajectory:
    """The branch trajectory for a fork point: the parent's tokens up to t_b, with or without t_b.

    Without the token the branch resamples t_b itself; its fork position t_b − 1 may then be a tool
    or prompt token (a branch at the first token of a turn), which `Trajectory.branch` refuses, so
    the child is cut at t_b and shortened by one. A fork point with an edit ignores `include_token`:
    the child is cut before t_b and gets the edit's inserted tokens (`Trajectory.edited_branch`).
    """
    if fp.edit is not None:
        return fp.parent.edited_branch(fp.position, traj_id, fp.edit.insert, {"op": fp.edit.op, **fp.edit.info})
    child = fp.parent.branch(fp.position, traj_id)
    if not include_token:
        for name in ("tokens", "logprobs", "entropies", "sources", "turns", "loss_mask"):
            getattr(child, name).pop()
        child.fork_pos = fp.position - 1
    return child
