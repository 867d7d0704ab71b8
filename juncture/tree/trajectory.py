"""One trajectory = one token sequence with per-token arrays that stay aligned.

Every array (log-prob, entropy, source, turn, loss mask) has exactly one entry per token,
whoever produced the token: prompt, tool and injected tokens get NaN log-prob/entropy placeholders.
The reference APPO code broke this after tool outputs (spec defect D1); here `append` is
the only way to grow a trajectory and `check` enforces the invariant.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from enum import IntEnum
from pathlib import Path

from juncture import jsonl


class Source(IntEnum):
    PROMPT = 0
    MODEL = 1
    TOOL = 2
    INJECTED = 3  # text a method wrote into a response (ReSum's summary phrase): never sampled, never trained


@dataclass
class ToolCall:
    """A tool call and its result; `result_start:result_end` is the result's token span."""

    name: str
    query: str
    output: str
    ok: bool
    error: str | None
    turn: int
    result_start: int
    result_end: int
    seconds: float = 0.0


@dataclass
class Trajectory:
    traj_id: str
    group_id: str
    task_id: str
    prompt_len: int = 0
    tokens: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    entropies: list[float] = field(default_factory=list)
    sources: list[int] = field(default_factory=list)
    turns: list[int] = field(default_factory=list)
    loss_mask: list[int] = field(default_factory=list)
    tool_calls: list[ToolCall] = field(default_factory=list)
    parent_id: str | None = None
    fork_pos: int | None = None
    kind: str = "initial"
    finish_reason: str = ""
    answer: str | None = None
    reward: float | None = None
    reward_info: dict = field(default_factory=dict)
    metadata: dict = field(default_factory=dict)

    # ---- construction -------------------------------------------------------------------
    @classmethod
    def from_prompt(cls, prompt_tokens: Sequence[int], traj_id: str, group_id: str, task_id: str) -> Trajectory:
        traj = cls(traj_id=traj_id, group_id=group_id, task_id=task_id)
        traj.append(prompt_tokens, Source.PROMPT)
        traj.prompt_len = len(traj.tokens)
        return traj

    def append(
        self,
        tokens: Sequence[int],
        source: Source,
        logprobs: Sequence[float] | None = None,
        entropies: Sequence[float] | None = None,
    ) -> None:
        """Append tokens from one source; model tokens must bring their log-probs and entropies."""
        n = len(tokens)
        if source == Source.MODEL:
            if logprobs is None or entropies is None or len(logprobs) != n or len(entropies) != n:
                raise ValueError("model tokens need one log-prob and one entropy each")
        elif logprobs is not None or entropies is not None:
            raise ValueError(f"{source.name} tokens carry no log-probs")
        self.tokens.extend(int(t) for t in tokens)
        self.logprobs.extend(map(float, logprobs) if logprobs is not None else [math.nan] * n)
        self.entropies.extend(map(float, entropies) if entropies is not None else [math.nan] * n)
        self.sources.extend([int(source)] * n)
        self.turns.extend([self.turn] * n)
        self.loss_mask.extend([1 if source == Source.MODEL else 0] * n)

    def new_turn(self) -> None:
        """Mark that the next tokens belong to the next model turn (after a tool result)."""
        self.metadata["turn"] = self.turn + 1

    @property
    def turn(self) -> int:
        return int(self.metadata.get("turn", 0))

    # ---- views --------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.tokens)

    @property
    def response_len(self) -> int:
        return len(self.tokens) - self.prompt_len

    @property
    def num_model_tokens(self) -> int:
        return sum(1 for s in self.sources if s == Source.MODEL)

    def model_tokens_after(self, pos: int) -> int:
        return sum(1 for s in self.sources[pos + 1 :] if s == Source.MODEL)

    def turn_start(self) -> int:
        """Index where the current model turn began (after the last prompt/tool token; injected
        tokens belong to the turn they were written into)."""
        for i in range(len(self.sources) - 1, -1, -1):
            if self.sources[i] in (Source.PROMPT, Source.TOOL):
                return i + 1
        return 0

    def check(self) -> None:
        """Raise if the per-token arrays or the tool-call spans are inconsistent."""
        n = len(self.tokens)
        for name in ("logprobs", "entropies", "sources", "turns", "loss_mask"):
            if len(getattr(self, name)) != n:
                raise AssertionError(f"{self.traj_id}: {name} has {len(getattr(self, name))} entries for {n} tokens")
        if any(s != Source.PROMPT for s in self.sources[: self.prompt_len]):
            raise AssertionError(f"{self.traj_id}: prompt region holds non-prompt tokens")
        for i, (s, lp, m) in enumerate(zip(self.sources, self.logprobs, self.loss_mask, strict=True)):
            if s == Source.MODEL and math.isnan(lp):
                raise AssertionError(f"{self.traj_id}: model token {i} has no log-prob")
            if s != Source.MODEL and (not math.isnan(lp) or m):
                raise AssertionError(f"{self.traj_id}: non-model token {i} carries a log-prob or loss mask")
        for call in self.tool_calls:
            span = self.sources[call.result_start : call.result_end]
            if any(s != Source.TOOL for s in span):
                raise AssertionError(f"{self.traj_id}: tool call {call.name} span is not all tool tokens")

    # ---- branching ----------------------------------------------------------------------
    def branch(self, fork_pos: int, traj_id: str) -> Trajectory:
        """A child sharing tokens[: fork_pos + 1] (the fork token included) and their arrays.

        Tool calls whose results lie inside the prefix are kept (and so never re-executed);
        the child's tool-call count therefore counts the response prefix only (spec D4).
        """
        if not (self.prompt_len <= fork_pos < len(self.tokens)):
            raise ValueError(f"fork position {fork_pos} outside the response [{self.prompt_len}, {len(self.tokens)})")
        if self.sources[fork_pos] != Source.MODEL:
            raise ValueError(f"fork position {fork_pos} is a {Source(self.sources[fork_pos]).name} token")
        end = fork_pos + 1
        child = Trajectory(
            traj_id=traj_id,
            group_id=self.group_id,
            task_id=self.task_id,
            prompt_len=self.prompt_len,
            tokens=self.tokens[:end],
            logprobs=self.logprobs[:end],
            entropies=self.entropies[:end],
            sources=self.sources[:end],
            turns=self.turns[:end],
            loss_mask=self.loss_mask[:end],
            tool_calls=[c for c in self.tool_calls if c.result_end <= end],
            parent_id=self.traj_id,
            fork_pos=fork_pos,
            kind="branch",
            metadata={"turn": self.turns[fork_pos]},
        )
        return child

    def edited_branch(self, cut: int, traj_id: str, insert: Sequence[int] = (), edit: dict | None = None) -> Trajectory:
        """A child that is *not* a plain prefix of this trajectory: tokens[:cut], then `insert` as
        Source.INJECTED tokens (loss-masked, NaN log-probs), ready to be continued.

        `cut` must be a model token of the response: the child drops it and everything after
        (ReSum masks a summary phrase by cutting at its first token, or injects a phrase there).
        The shared prefix is tokens[:cut], so `fork_pos = cut − 1` (possibly a prompt or tool
        token). Because the child's tokens are no longer parent prefix + its own samples, the edit
        is recorded in `metadata["edit"]` ({"op", "cut", "removed", "inserted", ...}).
        """
        if not (self.prompt_len <= cut < len(self.tokens)) or self.sources[cut] != Source.MODEL:
            raise ValueError(f"cut {cut} is not a model token of the response [{self.prompt_len}, {len(self.tokens)})")
        child = Trajectory(
            traj_id=traj_id,
            group_id=self.group_id,
            task_id=self.task_id,
            prompt_len=self.prompt_len,
            tokens=self.tokens[:cut],
            logprobs=self.logprobs[:cut],
            entropies=self.entropies[:cut],
            sources=self.sources[:cut],
            turns=self.turns[:cut],
            loss_mask=self.loss_mask[:cut],
            tool_calls=[c for c in self.tool_calls if c.result_end <= cut],
            parent_id=self.traj_id,
            fork_pos=cut - 1,
            kind="branch",
            metadata={"turn": self.turns[cut]},
        )
        child.append(insert, Source.INJECTED)
        child.metadata["edit"] = {"op": "cut", **(edit or {}), "cut": cut, "inserted": [int(t) for t in insert]}
        return child

    # ---- serialisation ------------------------------------------------------------------
    def to_dict(self) -> dict:
        d = asdict(self)
        d["logprobs"] = [None if math.isnan(x) else round(x, 6) for x in self.logprobs]
        d["entropies"] = [None if math.isnan(x) else round(x, 6) for x in self.entropies]
        return d

    @classmethod
    def from_dict(cls, d: dict) -> Trajectory:
        d = dict(d)
        d["logprobs"] = [math.nan if x is None else x for x in d["logprobs"]]
        d["entropies"] = [math.nan if x is None else x for x in d["entropies"]]
        d["tool_calls"] = [ToolCall(**c) for c in d.get("tool_calls", [])]
        traj = cls(**d)
        traj.check()
        return traj


def write_jsonl(trajs: Iterable[Trajectory], path: str | Path, before_publish=None) -> Path:
    """Trajectories as JSON lines (gzipped for a `.gz` path), published by rename."""
    return jsonl.write(path, (t.to_dict() for t in trajs), before_publish=before_publish)


def read_jsonl(path: str | Path) -> list[Trajectory]:
    out = []
    for where, record in jsonl.read(path):
        try:
            out.append(Trajectory.from_dict(record))
        except (TypeError, ValueError, KeyError, AssertionError, AttributeError) as e:
            raise ValueError(f"{where}: not a valid trajectory record: {e}") from e
    return out


def group_by(trajs: Iterable[Trajectory]) -> dict[str, list[Trajectory]]:
    groups: dict[str, list[Trajectory]] = {}
    for t in trajs:
        groups.setdefault(t.group_id, []).append(t)
    return groups
