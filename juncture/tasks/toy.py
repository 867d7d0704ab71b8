"""toy:even_tokens: a task whose optimum is known, to check that RL optimises anything at all.

The reward is the fraction of model-generated tokens whose id is even, whatever the text says:
a uniform policy scores about 0.5 and a policy that emits only even ids scores 1.0. Questions
differ only by an index, so every task has its own id; eval indices follow the train ones.
"""

from __future__ import annotations

from juncture.config import TaskConfig
from juncture.tasks.base import Task


def _task(split: str, index: int) -> Task:
    return Task(f"toy/{split}/{index}", f"Say anything. (request {index})", "", "even_tokens",
                {"source": "toy:even_tokens"}, ())


def build(cfg: TaskConfig) -> tuple[list[Task], list[Task]]:
    if cfg.verifier != "auto":
        raise ValueError(f"toy:even_tokens is scored by its token ids; task.verifier must be 'auto', not {cfg.verifier!r}")
    train = [_task("train", i) for i in range(cfg.train_size)]
    evals = [_task("eval", cfg.train_size + i) for i in range(cfg.eval_size)]
    return train, evals
