"""Where a token sits in the agent protocol: inside <think>, inside a tool call, right after a tool result.

Used to exclude tokens from selection and to report where fork points fall. Tags are found in the
concatenated text of the response's model tokens (tool output left out, so a tag quoted inside a
result never counts); a span includes its tags and an unclosed one runs to the end.
"""

from __future__ import annotations

import re
import string
import unicodedata
from collections import Counter
from collections.abc import Callable

import numpy as np

from juncture.tools import KNOWN_TOOLS
from juncture.tree import Source, Trajectory

_TAG = re.compile(r"<(/?)(think|" + "|".join(KNOWN_TOOLS) + r")>")
REGIONS = ("after_result", "tool_call", "think", "other")  # in order of precedence


def after_result_positions(traj: Trajectory) -> list[int]:
    """The first model token after each tool result."""
    return [c.result_end for c in traj.tool_calls
            if c.result_end < len(traj) and traj.sources[c.result_end] == Source.MODEL]


def tag_spans(traj: Trajectory, piece: Callable[[int], str]) -> tuple[np.ndarray, np.ndarray]:
    """Boolean masks over traj.tokens: (inside <think>…</think>, inside a tool call <python>…</python>)."""
    model = [i for i in range(traj.prompt_len, len(traj)) if traj.sources[i] == Source.MODEL]
    pieces = [piece(traj.tokens[i]) for i in model]
    ends = np.cumsum([len(p) for p in pieces], dtype=np.int64)
    starts = ends - np.array([len(p) for p in pieces], dtype=np.int64)
    text = "".join(pieces)
    spans: dict[str, list[tuple[int, int]]] = {"think": [], "call": []}
    open_at: dict[str, tuple[str, int] | None] = {"think": None, "call": None}
    for m in _TAG.finditer(text):
        closing, name = m.group(1) == "/", m.group(2)
        kind = "think" if name == "think" else "call"
        current = open_at[kind]
        if not closing and current is None:
            open_at[kind] = (name, m.start())
        elif closing and current is not None and current[0] == name:
            spans[kind].append((current[1], m.end()))
            open_at[kind] = None
    for kind, current in open_at.items():
        if current is not None:
            spans[kind].append((current[1], len(text) + 1))
    out = []
    for kind in ("think", "call"):
        inside = np.zeros(len(traj), dtype=bool)
        for lo, hi in spans[kind]:
            hit = (starts < hi) & (np.maximum(ends, starts + 1) > lo)
            inside[np.asarray(model, dtype=np.int64)[hit]] = True
        out.append(inside)
    return out[0], out[1]


def _is_punct(text: str) -> bool:
    s = text.strip()
    return bool(s) and all(c in string.punctuation or unicodedata.category(c).startswith("P") for c in s)


def excluded(traj: Trajectory, positions: np.ndarray, kinds: list[str], piece: Callable[[int], str]) -> np.ndarray:
    """Which of `positions` are excluded from selection by `selection.exclude`."""
    out = np.zeros(len(positions), dtype=bool)
    if "whitespace" in kinds or "punct" in kinds:
        texts = [piece(traj.tokens[p]) for p in positions]
        if "whitespace" in kinds:
            out |= np.array([not t.strip() for t in texts], dtype=bool)
        if "punct" in kinds:
            out |= np.array([_is_punct(t) for t in texts], dtype=bool)
    if "tool_call_spans" in kinds:
        out |= tag_spans(traj, piece)[1][positions]
    return out


def region_of(traj: Trajectory, pos: int, spans: tuple[np.ndarray, np.ndarray]) -> str:
    if pos in after_result_positions(traj):
        return "after_result"
    if spans[1][pos]:
        return "tool_call"
    return "think" if spans[0][pos] else "other"


def fork_metrics(forks, piece: Callable[[int], str]) -> dict[str, float]:
    """Where the fork points fall: protocol region, relative position, entropy, origin (strict/fill/duplicate)."""
    if not forks:
        return {}
    cache: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    regions, rel, ent = Counter(), [], []
    for fp in forks:
        t = fp.parent
        if t.traj_id not in cache:
            cache[t.traj_id] = tag_spans(t, piece)
        regions[region_of(t, fp.position, cache[t.traj_id])] += 1
        rel.append((fp.position - t.prompt_len) / max(t.response_len, 1))
        ent.append(t.entropies[fp.position])
    origins = Counter(fp.origin for fp in forks)
    n = len(forks)
    out = {f"fork/where/{r}": regions[r] / n for r in REGIONS}
    out.update({f"fork/origin/{o}": origins[o] / n for o in ("strict", "fill", "duplicate")})
    out.update({"fork/relative_position": float(np.mean(rel)), "fork/entropy": float(np.mean(ent))})
    return out
