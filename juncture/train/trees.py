"""The rollout-tree log `juncture report` reads: a sample of each step's trees with every per-token signal.

Per logged step, `trees/step_NNNNNN.jsonl.gz` (step numbers as in metrics.jsonl) holds one JSON line per
sampled prompt: the prompt text once, then one node per trajectory — an initial rollout from its first
response token, a branch from the token after its fork (its prefix is its parent's). Each node carries
its tokens as text, so the report needs no tokenizer, and aligned arrays: source, trained mask,
log-prob, entropy H, the branching strategy's Ω^BS and Branching Score where it computed them, and
the credit assigner's advantage (before the loss's Ω^loss scaling). Files are written whole and renamed
into place, so a report built while the run goes never reads a torn one.

Disk budget (`logging.tree_budget_mb`): after each write, while trees/ is over budget, the logged step
whose removal leaves the smallest gap between logged steps is deleted (the oldest among equals), so the
log thins evenly over the whole run; the first and newest step go last. A single step larger than the
budget is not kept (with a warning: lower `logging.tree_prompts`).
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from juncture import jsonl
from juncture.config import AlgorithmConfig, LoggingConfig
from juncture.tree import Source, Trajectory, group_by

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
_STEP_FILE = re.compile(r"^step_(\d+)\.jsonl\.gz$")


def token_texts(ids: Sequence[int], decode: Callable[[list[int]], str], cache: dict[int, str] | None = None) -> list[str]:
    """The text of each token, one string per id, concatenating to `decode(ids)` for byte-level BPE tokenizers
    (SmolLM2, Qwen, Llama 3), whose decoding is additive except where a character's bytes span tokens.
    A token that decodes to U+FFFD alone is joined with the next ones (up to 4) while decoding them together
    differs from decoding them apart; the group's text goes to its last token, the others get ''."""
    cache = {} if cache is None else cache

    def one(tok: int) -> str:
        text = cache.get(tok)
        if text is None:
            text = cache[tok] = decode([tok])
        return text

    out: list[str] = []
    i = 0
    while i < len(ids):
        group, text = [ids[i]], one(ids[i])
        if "\ufffd" in text:
            while len(group) < 4 and i + len(group) < len(ids):
                nxt = ids[i + len(group)]
                joint = decode([*group, nxt])
                if joint == text + one(nxt):
                    break
                group.append(nxt)
                text = joint
        out += [""] * (len(group) - 1) + [text]
        i += len(group)
    return out


def _rounded(values, start: int) -> list[float | None]:
    x = np.asarray(values, dtype=np.float64)[start:]
    return [None if math.isnan(v) else round(v, 4) for v in x.tolist()]


def _call_start(texts: list[str], sources: list[int], name: str, result_start: int) -> int:
    """Token index where the `<name>` tag that the result at `result_start` answers begins (the call span)."""
    i = result_start
    while i > 0 and sources[i - 1] == Source.MODEL:
        i -= 1
    turn = texts[i:result_start]
    at = "".join(turn).rfind(f"<{name}>")
    if at < 0:
        return result_start
    seen = 0
    for k, piece in enumerate(turn):
        seen += len(piece)
        if seen > at:
            return i + k
    return result_start


MaskFn = Callable[[Trajectory, AlgorithmConfig], np.ndarray]


def tree_record(step: int, group: list[Trajectory], advs: dict[str, np.ndarray], scores: dict[str, dict[str, np.ndarray]],
                alg: AlgorithmConfig, mask: MaskFn, decode: Callable[[list[int]], str], cache: dict[int, str],
                question: str | None = None) -> dict:
    """One prompt's tree as the JSON record the report reads (see the module docstring); `mask` is the
    Trainer's train-mask function, so the logged mask is the one the loss used."""
    first = group[0]
    nodes = []
    for t in group:
        p = t.prompt_len
        start = p if t.kind != "branch" else t.fork_pos + 1
        texts = token_texts(t.tokens[p:], decode, cache)  # the whole response: a call may begin before the fork
        calls = []
        for c in t.tool_calls:
            if c.result_end <= start:
                continue  # inherited from the parent: shown there
            call_start = p + _call_start(texts, t.sources[p:], c.name, c.result_start - p)
            calls.append({"name": c.name, "query": c.query[:300], "output": c.output[:300], "ok": c.ok, "error": c.error,
                          "call_start": max(call_start, start), "result_start": c.result_start,
                          "result_end": c.result_end})
        node = {
            "id": t.traj_id, "parent": t.parent_id, "fork_pos": t.fork_pos, "fork_origin": t.metadata.get("fork_origin"),
            "kind": t.kind, "start": start, "reward": t.reward, "correct": t.reward_info.get("correct"),
            "answer": t.answer, "finish": t.finish_reason, "tokens": texts[start - p :], "src": t.sources[start:],
            "mask": [int(m) for m in mask(t, alg)[start:]], "lp": _rounded(t.logprobs, start),
            "H": _rounded(t.entropies, start), "adv": _rounded(advs[t.traj_id], start), "calls": calls,
        }
        for name, values in scores.get(t.traj_id, {}).items():
            node[name] = _rounded(values, start)
        nodes.append(node)
    return {"v": FORMAT_VERSION, "step": step, "group_id": first.group_id, "task_id": first.task_id,
            "question": question, "prompt": decode(first.tokens[: first.prompt_len]), "nodes": nodes}


def thin(sizes: dict[int, int], budget: int) -> list[int]:
    """Steps to delete so the rest fit in `budget` bytes: repeatedly the step whose removal leaves the smallest
    gap between its neighbours (the oldest among equals), keeping the first and the newest step longest
    (a newest step larger than the whole budget goes at once)."""
    kept = sorted(sizes)
    total = sum(sizes.values())
    gone = []
    if kept and sizes[kept[-1]] > budget:  # the newest can never fit: it goes first, the older ones may stay
        total -= sizes[kept[-1]]
        gone.append(kept.pop())
    while total > budget and kept:
        # interior steps first; of the last two, the first goes before the newest
        i = min(range(1, len(kept) - 1), key=lambda j: (kept[j + 1] - kept[j - 1], j)) if len(kept) > 2 else 0
        total -= sizes[kept[i]]
        gone.append(kept.pop(i))
    return gone


def tree_files(directory: Path) -> dict[int, Path]:
    """{step: file} of the complete step files in a trees/ directory."""
    out = {}
    if directory.is_dir():
        for p in directory.iterdir():
            m = _STEP_FILE.match(p.name)
            if m:
                out[int(m.group(1))] = p
    return dict(sorted(out.items()))


def read_trees(path: Path) -> list[dict]:
    """The tree records of one step file; a bad file or line raises ValueError naming it."""
    out = []
    for where, rec in jsonl.read(path):
        missing = [k for k in ("step", "prompt", "nodes") if not isinstance(rec, dict) or k not in rec]
        if missing:
            raise ValueError(f"{where}: tree record lacks {', '.join(missing)}")
        out.append(rec)
    return out


class TreeLogger:
    """Writes the sampled trees of a step under run_dir/trees and keeps the directory within its budget."""

    def __init__(self, run_dir: Path, cfg: LoggingConfig, alg: AlgorithmConfig, mask: MaskFn, tokenizer,
                 questions: dict[str, str]):
        self.dir = run_dir / "trees"
        self.cfg, self.alg, self.mask, self.questions = cfg, alg, mask, questions
        self.decode = lambda ids: tokenizer.decode(ids)
        self.cache: dict[int, str] = {}
        for stale in self.dir.glob("*.tmp") if self.dir.is_dir() else ():
            stale.unlink()  # a write a crash interrupted

    def wants(self, step: int) -> bool:
        return self.cfg.tree_prompts > 0 and step % self.cfg.tree_every == 0

    def log(self, step: int, trajs: list[Trajectory], advs: list[np.ndarray],
            scores: dict[str, dict[str, np.ndarray]]) -> Path | None:
        """Write step `step`'s first `tree_prompts` prompt trees (prompts are drawn at random each step)."""
        if not self.wants(step):
            return None
        by_id = {t.traj_id: a for t, a in zip(trajs, advs, strict=True)}
        groups = list(group_by(trajs).values())[: self.cfg.tree_prompts]
        self.dir.mkdir(parents=True, exist_ok=True)
        records = (tree_record(step, g, by_id, scores, self.alg, self.mask, self.decode, self.cache,
                               self.questions.get(g[0].task_id)) for g in groups)
        path = jsonl.write(self.dir / f"step_{step:06d}.jsonl.gz", records, compact=True)
        self.enforce_budget(step)
        return path

    def enforce_budget(self, newest: int | None = None) -> list[int]:
        files = tree_files(self.dir)
        budget = int(self.cfg.tree_budget_mb * 2**20)
        gone = thin({s: p.stat().st_size for s, p in files.items()}, budget)
        for s in gone:
            files[s].unlink()
        if newest is not None and newest in gone:
            log.warning("trees of step %d alone exceed logging.tree_budget_mb=%s and were not kept; lower "
                        "logging.tree_prompts", newest, self.cfg.tree_budget_mb)
        return gone

    def truncate_after(self, step: int) -> None:
        """On resume, drop steps after the checkpoint (they will be logged again)."""
        for s, p in tree_files(self.dir).items():
            if s > step:
                p.unlink()
