"""Tasks from a reasoning-gym generator, split into disjoint, seeded train and eval sets.

reasoning-gym builds item i of a dataset seeded s from Random(s + i), so datasets with nearby
seeds share items (seed 2k+1's item i is seed 2k's item i + 1). The train seed and the eval
seeds are therefore hashed from (cfg.seed, split, round) into 32 bits. Eval keeps only items
whose question occurs neither in train nor earlier in eval, topping up from further rounds
(further hashed seeds) until it has eval_size items.

Scoring calls the generator's own `score_answer` on the entry regenerated from
metadata["rg"] = {generator, params, seed, size, index}: entries may hold tuples that a JSON
round trip turns into lists, which some scorers (arc_agi) then get wrong, so
metadata["entry"] is a JSON copy for logs and inspection only.
"""

from __future__ import annotations

import hashlib
import json
import math
from functools import lru_cache
from typing import Any

import reasoning_gym

from juncture.config import TaskConfig
from juncture.tasks.base import Task

MAX_EVAL_ROUNDS = 100


def derive_seed(seed: int, split: str, round_: int = 0) -> int:
    digest = hashlib.sha256(f"{seed}:{split}:{round_}".encode()).digest()
    return int.from_bytes(digest[:4], "big")


@lru_cache(maxsize=64)
def _dataset(generator: str, params_json: str, seed: int, size: int):
    try:
        return reasoning_gym.create_dataset(generator, seed=seed, size=size, **json.loads(params_json))
    except TypeError as e:  # an unknown generator keyword
        raise ValueError(f"task.params for reasoning_gym:{generator}: {e}") from None


@lru_cache(maxsize=16384)
def _entry(generator: str, params_json: str, seed: int, size: int, index: int) -> dict[str, Any]:
    return _dataset(generator, params_json, seed, size)[index]


def _task(generator: str, params_json: str, seed: int, size: int, index: int, task_id: str, verifier: str) -> Task:
    entry = _entry(generator, params_json, seed, size, index)
    ref = {"generator": generator, "params": json.loads(params_json), "seed": seed, "size": size, "index": index}
    metadata = {"source": f"reasoning_gym:{generator}", "rg": ref, "entry": json.loads(json.dumps(entry, default=str))}
    answer = "" if entry["answer"] is None else str(entry["answer"])
    return Task(task_id, entry["question"], answer, verifier, metadata, ("python",))


def build(cfg: TaskConfig) -> tuple[list[Task], list[Task]]:
    generator = cfg.name.split(":", 1)[1]
    params_json = json.dumps(cfg.params, sort_keys=True)
    verifier = "reasoning_gym" if cfg.verifier == "auto" else cfg.verifier
    seed = derive_seed(cfg.seed, "train")
    train = [
        _task(generator, params_json, seed, cfg.train_size, i, f"{generator}/train/{i}", verifier)
        for i in range(cfg.train_size)
    ]
    seen = {t.question for t in train}
    evals: list[Task] = []
    for round_ in range(MAX_EVAL_ROUNDS):
        seed = derive_seed(cfg.seed, "eval", round_)
        for i in range(cfg.eval_size):
            task = _task(generator, params_json, seed, cfg.eval_size, i, f"{generator}/eval/{len(evals)}", verifier)
            if task.question not in seen:
                seen.add(task.question)
                evals.append(task)
                if len(evals) == cfg.eval_size:
                    return train, evals
    raise ValueError(
        f"reasoning_gym:{generator} gave only {len(evals)} eval questions distinct from train after "
        f"{MAX_EVAL_ROUNDS} rounds; lower task.eval_size or task.train_size, or widen task.params"
    )


def score(task: Task, answer: str) -> float:
    """The generator's own score, clipped to [0, 1]; a scorer that raises on an odd answer scores 0."""
    ref = task.metadata["rg"]
    key = (ref["generator"], json.dumps(ref["params"], sort_keys=True), ref["seed"], ref["size"])
    entry = _entry(*key, ref["index"])
    try:
        value = float(_dataset(*key).score_answer(answer, entry))
    except Exception:  # scorers parse free-form model output and raise on plenty of it
        return 0.0
    return 0.0 if math.isnan(value) else min(1.0, max(0.0, value))
