"""The RL step: rollouts → branches → rewards → credit → loss → optimizer, with checkpoints.

Every source of randomness in a step is seeded from (seed, step), so a run resumed from a
checkpoint repeats exactly the steps an uninterrupted run would have taken.
"""

from __future__ import annotations

import copy
import gzip
import json
import time
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import torch

from juncture.agent import AgentLimits, continue_rollouts, new_trajectories
from juncture.branching import BRANCHING
from juncture.config import RunConfig
from juncture.credit import CREDIT
from juncture.policy.hf import HFPolicy
from juncture.rewards import compute_reward
from juncture.tasks import Task
from juncture.train.batching import pack, score
from juncture.train.checkpoint import latest_checkpoint, load_trainer_state, save_checkpoint
from juncture.train.loss import policy_loss, token_weights
from juncture.train.metrics import MetricsLogger
from juncture.tree import Source, Trajectory


def step_seed(seed: int, step: int, salt: int = 0) -> int:
    return int(np.random.SeedSequence([seed, step, salt]).generate_state(1)[0])


def score_rollouts(trajs: list[Trajectory], tasks: dict[str, Task], cfg: RunConfig, tokenizer) -> None:
    """Fill reward, answer and reward_info of every trajectory."""
    for t in trajs:
        response = t.tokens[t.prompt_len :]
        model_ids = [tok for tok, s in zip(response, t.sources[t.prompt_len :], strict=True) if s == Source.MODEL]
        r = compute_reward(tasks[t.task_id], tokenizer.decode(response), cfg.reward, model_ids)
        t.reward = r.total
        t.reward_info = {"correct": r.correct, "format_ok": r.format_ok, "has_answer": r.has_answer, **r.info}
        t.answer = r.info.get("answer")


def rollout_stats(trajs: list[Trajectory], prefix: str = "rollout") -> dict:
    """Reward, accuracy, length, tool and entropy statistics of a set of finished trajectories."""
    if not trajs:
        return {}
    calls = [c for t in trajs for c in t.tool_calls]
    ents = [e for t in trajs for e, s in zip(t.entropies, t.sources, strict=True) if s == Source.MODEL]
    stats = {
        f"{prefix}/reward": float(np.mean([t.reward for t in trajs])),
        f"{prefix}/accuracy": float(np.mean([t.reward_info.get("correct", 0.0) for t in trajs])),
        f"{prefix}/format_ok": float(np.mean([t.reward_info.get("format_ok", False) for t in trajs])),
        f"{prefix}/has_answer": float(np.mean([t.reward_info.get("has_answer", False) for t in trajs])),
        f"{prefix}/model_tokens": float(np.mean([t.num_model_tokens for t in trajs])),
        f"{prefix}/response_tokens": float(np.mean([t.response_len for t in trajs])),
        f"{prefix}/tool_calls": len(calls) / len(trajs),
        f"{prefix}/tool_errors": sum(1 for c in calls if not c.ok) / len(trajs),
        f"{prefix}/entropy": float(np.mean(ents)) if ents else 0.0,
    }
    for reason, n in Counter(t.finish_reason for t in trajs).items():
        stats[f"{prefix}/finish/{reason}"] = n / len(trajs)
    for kind, n in Counter(c.error for c in calls if c.error).items():
        stats[f"{prefix}/tool_error/{kind}"] = n
    return stats


class Trainer:
    def __init__(self, cfg: RunConfig, policy: HFPolicy, tools: dict, train_tasks: list[Task], run_dir: Path):
        self.cfg = cfg
        self.policy = policy
        self.tools = tools
        self.train_tasks = train_tasks
        self.task_index = {t.id: t for t in train_tasks}
        self.run_dir = run_dir
        run_dir.mkdir(parents=True, exist_ok=True)
        self.limits = AgentLimits.from_config(cfg.agent)
        self.branching = BRANCHING.get(cfg.algorithm.branching)
        self.credit = CREDIT.get(cfg.algorithm.credit)
        model = policy.model
        self.optimizer = torch.optim.AdamW(
            model.parameters(), lr=cfg.optim.lr, betas=cfg.optim.betas, weight_decay=cfg.optim.weight_decay
        )
        warmup = cfg.optim.warmup_steps
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda s: min(1.0, (s + 1) / warmup) if warmup else 1.0
        )
        self.ref_model = copy.deepcopy(model).eval().requires_grad_(False) if cfg.loss.kl_coef > 0 else None
        self.ckpt_dir = run_dir / "checkpoints"
        self.metrics = MetricsLogger(run_dir, cfg.logging, cfg.model_dump(mode="json"))
        self.start_step = 0
        self.tokens_generated = 0

    # ---- resume -------------------------------------------------------------------------
    def resume(self) -> bool:
        """Load the latest checkpoint if there is one; returns whether it did."""
        ckpt = latest_checkpoint(self.ckpt_dir)
        if ckpt is None:
            return False
        from safetensors.torch import load_file

        state = load_file(str(ckpt / "model.safetensors"))
        self.policy.model.load_state_dict(state, strict=False)
        self.policy.model.tie_weights()
        self.policy.sync_weights()
        info = load_trainer_state(ckpt, self.optimizer, self.scheduler)
        self.start_step = info["step"]
        self.tokens_generated = info.get("tokens_generated", 0)
        self.metrics.truncate_after(self.start_step)
        return True

    # ---- one step -----------------------------------------------------------------------
    def sample_tasks(self, step: int) -> list[Task]:
        rng = np.random.default_rng(step_seed(self.cfg.train.seed, step, 1))
        k = min(self.cfg.train.prompts_per_step, len(self.train_tasks))
        return [self.train_tasks[i] for i in rng.choice(len(self.train_tasks), size=k, replace=False)]

    def rollout(self, step: int) -> tuple[list[Trajectory], dict]:
        cfg = self.cfg
        gen = torch.Generator().manual_seed(step_seed(cfg.train.seed, step, 2))
        t0 = time.perf_counter()
        trajs = new_trajectories(self.policy.tokenizer, self.sample_tasks(step), cfg.algorithm.group_size, cfg.agent, step)
        continue_rollouts(self.policy, trajs, self.tools, self.limits, cfg.sampling, gen)
        forks = self.branching(trajs, 0)
        branches = [fp.parent.branch(fp.position, f"{fp.parent.traj_id}-b{i}") for i, fp in enumerate(forks)]
        if branches:
            continue_rollouts(self.policy, branches, self.tools, self.limits, cfg.sampling, gen)
        trajs += branches
        score_rollouts(trajs, self.task_index, cfg, self.policy.tokenizer)
        new_tokens = sum(t.model_tokens_after(t.fork_pos) if t.fork_pos is not None else t.num_model_tokens
                         for t in trajs)
        self.tokens_generated += new_tokens
        return trajs, {"time/rollout_s": time.perf_counter() - t0, "rollout/new_tokens": new_tokens}

    def _rows_logprobs(self, model, rows: list[Trajectory]) -> list[np.ndarray]:
        """Full-length log-prob arrays of `rows` under `model` (no grad), micro-batched."""
        out = []
        mb = self.cfg.train.micro_batch_size
        with torch.no_grad(), self.policy.autocast():
            for i in range(0, len(rows), mb):
                chunk = rows[i : i + mb]
                packed = pack(chunk, self.policy.pad_id)
                logp, _ = score(model, packed, self.cfg.sampling.temperature)
                for j, t in enumerate(chunk):
                    full = np.full(len(t), np.nan, dtype=np.float32)
                    r = min(packed.width, len(t) - 1)
                    full[len(t) - r :] = logp[j, packed.width - r :].numpy()
                    out.append(full)
        return out

    def update(self, trajs: list[Trajectory]) -> dict:
        cfg = self.cfg
        t0 = time.perf_counter()
        advs = self.credit(trajs, cfg.algorithm)
        rows = [(t, a) for t, a in zip(trajs, advs, strict=True) if any(t.loss_mask)]
        if not rows:
            return {"time/update_s": 0.0}
        model = self.policy.model
        model.train()
        n_up = min(cfg.train.updates_per_step, len(rows))
        old = self._rows_logprobs(model, [t for t, _ in rows]) if n_up > 1 else None
        ref = self._rows_logprobs(self.ref_model, [t for t, _ in rows]) if self.ref_model is not None else None
        sums: dict[str, float] = defaultdict(float)
        grad_norms = []
        mini = np.array_split(np.arange(len(rows)), n_up)
        for idx in mini:
            weights = token_weights([np.asarray(rows[i][0].loss_mask) for i in idx], cfg.loss.agg, cfg.agent.max_new_tokens)
            self.optimizer.zero_grad(set_to_none=True)
            for start in range(0, len(idx), cfg.train.micro_batch_size):
                sel = idx[start : start + cfg.train.micro_batch_size]
                stats = self._micro_step(
                    [rows[i] for i in sel],
                    weights[start : start + len(sel)],
                    None if old is None else [old[i] for i in sel],
                    None if ref is None else [ref[i] for i in sel],
                )
                for k, v in stats.items():
                    sums[k] += v
            grad_norms.append(float(torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.optim.grad_clip)))
            self.optimizer.step()
            self.scheduler.step()
        self.policy.sync_weights()
        n = max(sums.pop("tokens"), 1.0)
        loss = sums.pop("loss") / n_up
        out = {f"train/{k}": v / n for k, v in sums.items()}
        out.update({"train/loss": loss, "train/grad_norm": float(np.mean(grad_norms)), "train/lr": self.scheduler.get_last_lr()[0],
                    "train/rows": len(rows), "time/update_s": time.perf_counter() - t0})
        return out

    def _micro_step(self, rows, weights, old, ref) -> dict[str, float]:
        cfg = self.cfg
        trajs = [t for t, _ in rows]
        packed = pack(trajs, self.policy.pad_id)
        with self.policy.autocast():
            logp, entropy = score(self.policy.model, packed, cfg.sampling.temperature, with_entropy=cfg.loss.entropy_coef > 0)
        rollout_logp = packed.tail([np.asarray(t.logprobs) for t in trajs])
        old_logp = packed.tail(old) if old is not None else logp.detach()
        loss, stats = policy_loss(
            logp, old_logp, packed.tail([a for _, a in rows]), packed.tail(weights), cfg.loss,
            ref_logp=packed.tail(ref) if ref is not None else None, entropy=entropy,
        )
        loss.backward()
        mask = packed.loss_mask
        stats["rollout_logp_abs_diff"] = ((logp.detach() - rollout_logp).abs() * mask).sum()
        stats["loss"] = loss.detach()
        return {k: float(v) for k, v in stats.items()}

    def save(self, step: int) -> None:
        save_checkpoint(self.ckpt_dir, step, self.policy.model, self.policy.tokenizer, self.optimizer, self.scheduler,
                        {"tokens_generated": self.tokens_generated}, self.cfg.train.keep_checkpoints)

    def log_rollouts(self, step: int, trajs: list[Trajectory]) -> None:
        out = self.run_dir / "rollouts"
        out.mkdir(exist_ok=True)
        with gzip.open(out / f"step_{step:06d}.jsonl.gz", "wt") as f:
            for t in trajs:
                f.write(json.dumps(t.to_dict()) + "\n")

    def train_step(self, step: int) -> dict:
        trajs, metrics = self.rollout(step)
        metrics.update(rollout_stats([t for t in trajs if t.kind == "initial"]))
        metrics.update(self.update(trajs))
        metrics["tokens_generated_total"] = self.tokens_generated
        self.log_rollouts(step, trajs)
        return metrics
