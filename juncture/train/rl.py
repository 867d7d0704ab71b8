"""The RL step: rollouts → branches → rewards → credit → loss → optimizer, with checkpoints.

Per prompt, N_init initial rollouts run to completion; the branching strategy then picks
B = n − N_init fork points among them, and each branch continues from its parent's prefix (or an
edited one: a fork point may carry a BranchEdit) with the same agent loop (tool results in the
prefix are reused, never re-executed).

Every source of randomness in a step is seeded from (seed, step), so a run resumed from a
checkpoint repeats exactly the steps an uninterrupted run would have taken; the weights Ω^BS
compares against (`previous_step`) are checkpointed beside the model for that reason.
"""

from __future__ import annotations

import copy
import logging
import os
import time
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_model, save_model

from juncture.agent import AgentLimits, continue_rollouts, new_trajectories
from juncture.branching import BRANCHING, BranchContext, make_branch, uses_omega
from juncture.branching.spans import fork_metrics
from juncture.config import RunConfig
from juncture.credit import CREDIT, train_mask_of
from juncture.policy.hf import HFPolicy
from juncture.rewards import compute_reward
from juncture.tasks import Task
from juncture.tools import SANDBOX_VIOLATIONS
from juncture.train.checkpoint import (
    crash_point,
    latest_checkpoint,
    load_trainer_state,
    save_checkpoint,
    writing,
)
from juncture.train.loss import policy_loss, token_weights
from juncture.train.metrics import MetricsLogger
from juncture.train.optim import adamw
from juncture.train.tree_packing import packer
from juncture.train.trees import TreeLogger
from juncture.tree import Source, Trajectory, write_jsonl

log = logging.getLogger(__name__)


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


def sandbox_violations(trajs: list[Trajectory]) -> dict:
    """Python-sandbox violations by kind among the calls run this step (a branch's calls before
    its fork point ran in its parent and are not counted again)."""
    counts = Counter(
        c.error for t in trajs for c in t.tool_calls
        if c.name == "python" and c.error in SANDBOX_VIOLATIONS and (t.fork_pos is None or c.result_start > t.fork_pos)
    )
    return {"sandbox/violations": sum(counts.values()), **{f"sandbox/violation/{k}": n for k, n in sorted(counts.items())}}


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
        self.train_mask = train_mask_of(self.credit)
        self.omega_ref = cfg.algorithm.omega_bs.reference_policy if uses_omega(self.branching) else None
        model = policy.model
        self.optimizer = adamw(model.parameters(), lr=cfg.optim.lr, betas=cfg.optim.betas,
                               weight_decay=cfg.optim.weight_decay)
        warmup = cfg.optim.warmup_steps
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda s: min(1.0, (s + 1) / warmup) if warmup else 1.0
        )
        needs_ref = cfg.loss.kl_coef > 0 or self.omega_ref == "frozen_ref"
        self.ref_model = _frozen_copy(model) if needs_ref else None  # the initial policy
        self.prev_model = None  # weights before the last update (Ω^BS previous_step); none before step 1
        self.ckpt_dir = run_dir / "checkpoints"
        self.metrics = MetricsLogger(run_dir, cfg.logging, cfg.model_dump(mode="json"))
        self.trees = TreeLogger(run_dir, cfg.logging, cfg.algorithm, self.train_mask, policy.tokenizer,
                                {t.id: t.question for t in train_tasks})
        self.start_step = 0
        self.tokens_generated = 0
        self.pack, self.score = packer(cfg.train.packing, policy.pad_id)
        # Log-probs already computed this step, by (model, traj_id, tokens): the policy's stay valid until the
        # next optimizer step, the frozen reference's for the whole step (see _rows_logprobs).
        self.logp_memo: dict[tuple[str, str, tuple[int, ...]], np.ndarray] = {}

    # ---- resume -------------------------------------------------------------------------
    def resume(self) -> bool:
        """Load the latest checkpoint if there is one; returns whether it did."""
        ckpt = latest_checkpoint(self.ckpt_dir)
        if ckpt is None:
            self.metrics.truncate_after(0)  # killed before the first checkpoint: no step is kept
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
        self.trees.truncate_after(self.start_step)
        previous = self._previous_path(self.start_step)
        if self.omega_ref == "previous_step" and previous.is_file():
            self.prev_model = _frozen_copy(self.policy.model)
            load_model(self.prev_model, str(previous))
        elif self.omega_ref == "previous_step":
            log.warning("%s is missing: Ω^BS has no reference on the first resumed step", previous.name)
        return True

    # ---- one step -----------------------------------------------------------------------
    def sample_tasks(self, step: int) -> list[Task]:
        rng = np.random.default_rng(step_seed(self.cfg.train.seed, step, 1))
        k = min(self.cfg.train.prompts_per_step, len(self.train_tasks))
        return [self.train_tasks[i] for i in rng.choice(len(self.train_tasks), size=k, replace=False)]

    def rollout(self, step: int) -> tuple[list[Trajectory], dict]:
        """N_init rollouts per prompt, then B branches per prompt from the strategy's fork points, all scored."""
        trajs, metrics, _ = self._rollout(step)
        return trajs, metrics

    def _rollout(self, step: int) -> tuple[list[Trajectory], dict, BranchContext]:
        """`rollout`, also returning the branching context (its per-token scores go to the tree log)."""
        cfg, alg = self.cfg, self.cfg.algorithm
        gen = torch.Generator().manual_seed(step_seed(cfg.train.seed, step, 2))
        t0 = time.perf_counter()
        self.logp_memo.clear()
        tasks = self.sample_tasks(step)
        initial = new_trajectories(self.policy.tokenizer, tasks, alg.initial_per_group, cfg.agent, step)
        continue_rollouts(self.policy, initial, self.tools, self.limits, cfg.sampling, gen)
        t1 = time.perf_counter()
        ctx = BranchContext(alg, np.random.default_rng(step_seed(cfg.train.seed, step, 3)), self.policy.tokenizer,
                            self._omega_log_ratio, max_new_tokens=cfg.agent.max_new_tokens)
        forks = self.branching(initial, alg.branch_budget, ctx) if alg.branch_budget else []
        branches = [make_branch(fp, f"{fp.parent.traj_id}-b{i}", alg.branch.include_token) for i, fp in enumerate(forks)]
        for fp, b in zip(forks, branches, strict=True):
            b.metadata["fork_origin"] = fp.origin
        inherited_calls = sum(len(b.tool_calls) for b in branches)
        t2 = time.perf_counter()
        if branches:
            continue_rollouts(self.policy, branches, self.tools, self.limits, cfg.sampling, gen)
        t3 = time.perf_counter()
        trajs = initial + branches
        score_rollouts(trajs, self.task_index, cfg, self.policy.tokenizer)
        annotate = getattr(self.branching, "annotate", None)  # a strategy's post-scoring pass (ReSum's counts)
        if annotate is not None:
            annotate(trajs, ctx)
        new_init = sum(t.num_model_tokens for t in initial)
        new_branch = sum(b.model_tokens_after(b.fork_pos) for b in branches)
        self.tokens_generated += new_init + new_branch
        metrics = {
            "time/rollout_s": time.perf_counter() - t0, "time/branch_select_s": t2 - t1,
            "time/branch_rollout_s": t3 - t2, "rollout/new_tokens": new_init + new_branch,
            "rollout/new_tokens_initial": new_init, "rollout/new_tokens_branch": new_branch,
            "rollout/rows_per_prompt": len(trajs) / max(len(tasks), 1), **ctx.metrics, **fork_metrics(forks, ctx.piece),
        }
        if branches:
            parents = {t.traj_id: t for t in initial}
            metrics["fork/reward_minus_source"] = float(np.mean([b.reward - parents[b.parent_id].reward for b in branches]))
            metrics["branches/new_tool_calls"] = (sum(len(b.tool_calls) for b in branches) - inherited_calls) / len(branches)
        return trajs, metrics, ctx

    def _omega_log_ratio(self, trajs: list[Trajectory]) -> list[np.ndarray] | None:
        """log π_cur − log π_ref per token for Ω^BS, both sides from the training forward except
        `rollout_engine`, whose reference is the sampler's own log-probs (the reference code's D2)."""
        ref = self.omega_ref
        if ref == "previous_step" and self.prev_model is None:
            return None
        cur = self._rows_logprobs("policy", trajs)
        if ref == "rollout_engine":
            old = [np.asarray(t.logprobs, dtype=np.float32) for t in trajs]
        else:
            old = self._rows_logprobs("previous" if ref == "previous_step" else "ref", trajs)
        return [c - o for c, o in zip(cur, old, strict=True)]

    def _rows_logprobs(self, which: str, rows: list[Trajectory]) -> list[np.ndarray]:
        """Full-length log-prob arrays of `rows` under the policy, the frozen reference or the previous
        weights (no grad, micro-batched; valid at least on every response token).

        Results are memoised for the step: the Ω^BS pass over the initial rollouts runs before the
        update on the same weights, so the update's old-policy and reference passes reuse it.
        """
        model = {"policy": self.policy.model, "ref": self.ref_model, "previous": self.prev_model}[which]
        key = lambda t: (which, t.traj_id, tuple(t.tokens))  # noqa: E731
        todo = [t for t in rows if key(t) not in self.logp_memo]
        if self.cfg.train.packing == "tree":
            todo.sort(key=lambda t: t.tokens)  # neighbours share prefixes
        mb = self.cfg.train.micro_batch_size
        with torch.no_grad(), self.policy.train_forward():
            for i in range(0, len(todo), mb):
                chunk = todo[i : i + mb]
                packed = self.pack(chunk)
                logp, _ = self.score(model, packed, self.cfg.sampling.temperature)
                for j, t in enumerate(chunk):
                    full = np.full(len(t), np.nan, dtype=np.float32)
                    r = min(packed.width, len(t) - 1)
                    full[len(t) - r :] = logp[j, packed.width - r :].float().cpu().numpy()
                    self.logp_memo[key(t)] = full
        return [self.logp_memo[key(t)] for t in rows]

    def update(self, trajs: list[Trajectory], advs: list[np.ndarray] | None = None) -> dict:
        """One policy update on `trajs`, with the credit assigner's advantages unless `advs` are given."""
        cfg = self.cfg
        t0 = time.perf_counter()
        advs = self.credit(trajs, cfg.algorithm) if advs is None else advs
        masks = [self.train_mask(t, cfg.algorithm) for t in trajs]
        rows = [(t, a, m) for t, a, m in zip(trajs, advs, masks, strict=True) if m.any()]
        if not rows:
            return {"time/update_s": 0.0}
        self._snapshot_previous()
        model = self.policy.model
        model.train()
        n_up = min(cfg.train.updates_per_step, len(rows))
        mini = np.array_split(np.arange(len(rows)), n_up)
        # Only mini-batches after the first optimizer step need the old policy's log-probs: before it,
        # old == current, and the loss uses the current ones, detached.
        later = [i for idx in mini[1:] for i in idx]
        old: list[np.ndarray | None] = [None] * len(rows)
        for i, lp in zip(later, self._rows_logprobs("policy", [rows[i][0] for i in later]), strict=True):
            old[i] = lp
        ref = self._rows_logprobs("ref", [t for t, _, _ in rows]) if cfg.loss.kl_coef > 0 else None
        sums: dict[str, float] = defaultdict(float)
        grad_norms = []
        for n, idx in enumerate(mini):
            for k, v in self.accumulate_grads(rows, idx, old if n else None, ref).items():
                sums[k] += v
            grad_norms.append(float(torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.optim.grad_clip)))
            self.optimizer.step()
            self.scheduler.step()
            self.logp_memo = {k: v for k, v in self.logp_memo.items() if k[0] != "policy"}  # stale now
        self.policy.sync_weights()
        n = max(sums.pop("tokens"), 1.0)
        loss = sums.pop("loss") / n_up
        out = {f"train/{k}": v / n for k, v in sums.items()}
        out.update({"train/loss": loss, "train/grad_norm": float(np.mean(grad_norms)), "train/lr": self.scheduler.get_last_lr()[0],
                    "train/rows": len(rows), "time/update_s": time.perf_counter() - t0})
        return out

    def accumulate_grads(self, rows, idx, old: list | None, ref: list | None) -> dict:
        """Zero the gradients, then accumulate the loss gradient of the mini-batch rows[idx] over micro-batches.

        `old` (old-policy log-probs; None: old == current) and `ref` are aligned with `rows`.
        The loss weights are fixed over the whole mini-batch first, so neither the micro-batch split
        nor the row order (tree packing puts rows sharing prefixes side by side) changes the sum.
        """
        cfg = self.cfg
        if cfg.train.packing == "tree":
            idx = sorted(idx, key=lambda i: rows[i][0].tokens)
        weights = token_weights([rows[i][2] for i in idx], cfg.loss.agg, cfg.agent.max_new_tokens)
        self.optimizer.zero_grad(set_to_none=True)
        sums: dict[str, float] = defaultdict(float)
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
        return sums

    def _micro_step(self, rows, weights, old, ref) -> dict[str, float]:
        cfg = self.cfg
        trajs = [t for t, _, _ in rows]
        packed = self.pack(trajs)
        with self.policy.train_forward():
            logp, entropy = self.score(self.policy.model, packed, cfg.sampling.temperature,
                                       with_entropy=cfg.loss.entropy_coef > 0)

        def tail(arrays):  # per-token arrays onto the loss grid, on the model's device
            return packed.tail(arrays).to(logp.device)

        rollout_logp = tail([np.asarray(t.logprobs) for t in trajs])
        old_logp = tail(old) if old is not None else logp.detach()
        w = tail(weights)
        loss, stats = policy_loss(
            logp, old_logp, tail([a for _, a, _ in rows]), w, cfg.loss,
            ref_logp=tail(ref) if ref is not None else None, entropy=entropy,
            omega=cfg.algorithm.omega_loss if cfg.algorithm.credit == "appo" else None,
        )
        loss.backward()
        mask = (w > 0).float()
        stats["rollout_logp_abs_diff"] = ((logp.detach() - rollout_logp).abs() * mask).sum()
        stats["loss"] = loss.detach()
        return {k: float(v) for k, v in stats.items()}

    def _snapshot_previous(self) -> None:
        """Keep the weights about to be updated: Ω^BS previous_step compares the next samples against them."""
        if self.omega_ref != "previous_step":
            return
        if self.prev_model is None:
            self.prev_model = _frozen_copy(self.policy.model)
        else:
            self.prev_model.load_state_dict(self.policy.model.state_dict())
        self.logp_memo = {k: v for k, v in self.logp_memo.items() if k[0] != "previous"}

    def _previous_path(self, step: int) -> Path:
        return self.ckpt_dir / f"previous_step_{step:06d}.safetensors"

    def save(self, step: int) -> None:
        if self.prev_model is not None:  # written first: a checkpoint never exists without it
            target = self._previous_path(step)
            with writing(f"Ω^BS reference weights of step {step}", target):
                self.ckpt_dir.mkdir(parents=True, exist_ok=True)
                tmp = target.with_suffix(".tmp")
                save_model(self.prev_model, str(tmp))
                os.replace(tmp, target)
        save_checkpoint(self.ckpt_dir, step, self.policy.model, self.policy.tokenizer, self.optimizer, self.scheduler,
                        {"tokens_generated": self.tokens_generated}, self.cfg.train.keep_checkpoints)
        kept = {p.name for p in self.ckpt_dir.glob("step_*")}
        for f in self.ckpt_dir.glob("previous_step_*.safetensors"):
            if f.stem.replace("previous_", "") not in kept:
                f.unlink()

    def log_rollouts(self, step: int, trajs: list[Trajectory]) -> None:
        """Every trajectory of the step, gzipped JSON lines, published by rename (never half a file)."""
        target = self.run_dir / "rollouts" / f"step_{step:06d}.jsonl.gz"
        with writing(f"rollouts of step {step}", target):
            target.parent.mkdir(exist_ok=True)
            write_jsonl(trajs, target, before_publish=lambda: crash_point("rollouts", step))

    def train_step(self, step: int) -> dict:
        trajs, metrics, ctx = self._rollout(step)
        metrics.update(rollout_stats([t for t in trajs if t.kind == "initial"]))
        metrics.update(rollout_stats([t for t in trajs if t.kind == "branch"], "branches"))
        metrics.update(sandbox_violations(trajs))
        advs = self.credit(trajs, self.cfg.algorithm)
        metrics.update(self.update(trajs, advs))
        metrics["tokens_generated_total"] = self.tokens_generated
        if self.cfg.logging.rollouts:
            self.log_rollouts(step, trajs)
        t0 = time.perf_counter()
        self.trees.log(step + 1, trajs, advs, ctx.token_scores)  # numbered as in metrics.jsonl
        metrics["time/tree_log_s"] = time.perf_counter() - t0
        return metrics


def _frozen_copy(model: torch.nn.Module) -> torch.nn.Module:
    frozen = copy.deepcopy(model).eval().requires_grad_(False)
    for p in frozen.parameters():
        p.grad = None
    return frozen
