"""Supervised cold start: teach the tag protocol from demonstrations before RL.

SmolLM2 follows the protocol only when shown how (0/32 tag use with a plain instruction),
so the reference pipelines, and juncture's quickstart, run a short SFT first. Demonstrations
come from a JSONL file ({"question", "response"}) or are generated for the built-in tasks by
running the real tools, so the shown <result> blocks are true tool outputs. Tool-output
tokens are masked from the loss exactly as in RL.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import torch

from juncture import jsonl
from juncture.agent import encode_prompt
from juncture.agent.protocol import result_text
from juncture.config import RunConfig
from juncture.tasks import Task
from juncture.tasks.base import TaskDataError
from juncture.train.batching import pack, score
from juncture.train.optim import adamw
from juncture.tree import Source, Trajectory

_RESULT = re.compile(r"\n<result>\n.*?\n</result>\n", re.DOTALL)


def demo_response(task: Task, tools: dict) -> str:
    """A correct protocol-following response for a built-in task, using the real tools."""
    expression = task.metadata.get("entry", {}).get("metadata", {}).get("expression")
    if expression and "python" in tools:
        code = f"print({expression})"
        return f"<python>{code}</python>{result_text(tools['python'](code).output)}<answer>{task.answer}</answer>"
    description = task.metadata.get("description")
    if description and "search" in tools:
        return f"<search>{description}</search>{result_text(tools['search'](description).output)}<answer>{task.answer}</answer>"
    return f"<answer>{task.answer}</answer>"


def load_demos(path: str | Path) -> list[tuple[str, str]]:
    """(question, response) pairs from a JSONL file; a bad line names file, line and field."""
    out = []
    for where, rec in jsonl.read(path, TaskDataError):
        for field in ("question", "response"):
            if not isinstance(rec, dict) or not isinstance(rec.get(field), str):
                raise TaskDataError(f"{where}: field '{field}' is missing or not a string")
        out.append((rec["question"], rec["response"]))
    if not out:
        raise TaskDataError(f"{path}: no demonstrations")
    return out


def demo_trajectory(tokenizer, question: str, response: str, tools: list[str], template: str, idx: int) -> Trajectory:
    """Tokenise a demonstration segment by segment, as the agent loop would produce it."""
    task = Task(id=f"demo-{idx}", question=question, answer="", verifier="exact_match", tools=tuple(tools))
    traj = Trajectory.from_prompt(encode_prompt(tokenizer, task, tools, template), f"sft-{idx}", f"sft-{idx}", task.id)
    pos = 0
    for m in [*_RESULT.finditer(response), None]:
        end = m.start() if m else len(response)
        if end > pos:
            ids = tokenizer.encode(response[pos:end], add_special_tokens=False)
            traj.append(ids, Source.MODEL, [0.0] * len(ids), [0.0] * len(ids))
        if m:
            traj.append(tokenizer.encode(m.group(0), add_special_tokens=False), Source.TOOL)
            traj.new_turn()
            pos = m.end()
    traj.check()
    return traj


def build_sft_data(cfg: RunConfig, tokenizer, tools: dict, train_tasks: list[Task]) -> list[Trajectory]:
    if cfg.sft.data:
        pairs = load_demos(cfg.sft.data)
    else:
        pairs = [(t.question, demo_response(t, tools)) for t in train_tasks[: cfg.sft.num_demos]]
    return [demo_trajectory(tokenizer, q, r, list(cfg.agent.tools), cfg.agent.prompt, i) for i, (q, r) in enumerate(pairs)]


def run_sft(policy, data: list[Trajectory], cfg: RunConfig, log=print) -> list[float]:
    """Token-mean cross-entropy on model tokens; returns the loss of each step."""
    model = policy.model
    model.train()
    opt = adamw(model.parameters(), lr=cfg.sft.lr)
    rng = np.random.default_rng(cfg.train.seed)
    losses = []
    for step in range(cfg.sft.steps):
        batch = [data[i] for i in rng.choice(len(data), size=min(cfg.sft.batch_size, len(data)), replace=False)]
        n_tok = sum(t.num_model_tokens for t in batch)
        opt.zero_grad(set_to_none=True)
        total = 0.0
        for i in range(0, len(batch), cfg.train.micro_batch_size):
            packed = pack(batch[i : i + cfg.train.micro_batch_size], policy.pad_id)
            with policy.train_forward():
                logp, _ = score(model, packed, 1.0)
            loss = -(logp * packed.loss_mask.to(logp.device)).sum() / n_tok
            loss.backward()
            total += float(loss.detach())
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.optim.grad_clip)
        opt.step()
        losses.append(total)
        log(step, total)
    policy.sync_weights()
    return losses
