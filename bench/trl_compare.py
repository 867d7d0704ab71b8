"""Step time of juncture's GRPO step vs TRL's GRPOTrainer, same model, task and rollout budget.

Why: a reference point for "is juncture's training loop reasonably fast" against the most
used GRPO implementation, on the single-turn task both can run: reasoning-gym chain_sum
with no tools, P prompts x G samples per step, at most L new tokens, temperature 1.0,
beta=0 (no reference model), token-mean loss (TRL "dapo"), clip 0.2/0.28, one optimizer
step per rollout batch, one forward/backward micro-batch of P*G rows, constant lr, same seed.

Both run in this process with their steps interleaved (TRL step k, then juncture step k),
so a burst of load from other processes hits both alike. Each does 1 warm-up step, then
--steps timed steps; a step is generation + reward + loss + backward + optimizer step.
The sampled completions differ, so generated-token counts differ: compare tokens/s too.

    .venv/bin/python bench/trl_compare.py [--prompts 2] [--group 4] [--max-tokens 64]
        [--steps 3] [--dtype float32] [--json runs/bench/trl_compare.json]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch
from common import markdown_table, parse_and_setup, write_json

from juncture.agent.protocol import build_messages
from juncture.config import RunConfig, apply_overrides
from juncture.policy.hf import HFPolicy
from juncture.policy.loading import resolve_model
from juncture.rewards import compute_reward
from juncture.tasks import build_tasks
from juncture.train.rl import Trainer


def make_config(args) -> RunConfig:
    """Plain GRPO from the built-in defaults (not the quickstart, whose algorithm may change)."""
    return RunConfig.model_validate(apply_overrides({}, [
        "model.path=default", f"model.dtype={args.dtype}",
        "task.name=reasoning_gym:chain_sum", "task.params={min_terms: 2, max_terms: 4, min_digits: 1, max_digits: 2}",
        "task.train_size=500", "agent.prompt=fewshot", "agent.tools=[]", "agent.max_turns=1", "agent.max_tool_calls=0",
        f"agent.max_new_tokens={args.max_tokens}", f"agent.max_turn_tokens={args.max_tokens}",
        "sampling.temperature=1.0", "sampling.top_p=1.0", "sampling.top_k=0",
        "algorithm.branching=none", "algorithm.credit=grpo", f"algorithm.group_size={args.group}",
        "algorithm.n_initial=null", "algorithm.norm_adv_by_std=true",
        "loss.agg=token-mean", "loss.kl_coef=0", "loss.clip_low=0.2", "loss.clip_high=0.28",
        f"optim.lr={args.lr}", "optim.grad_clip=1.0", "optim.warmup_steps=0",
        f"train.prompts_per_step={args.prompts}", f"train.micro_batch_size={args.prompts * args.group}",
        "train.updates_per_step=1", f"train.seed={args.seed}", "logging.progress=false",
    ]))


def summarize(name: str, times: list[float], tokens: list[int], rollout: list[float]) -> dict:
    return {
        "impl": name, "steps": len(times), "step_s": statistics.mean(times), "min_step_s": min(times),
        "rollout_s": statistics.mean(rollout), "update_s": statistics.mean(times) - statistics.mean(rollout),
        "gen_tokens": statistics.mean(tokens), "gen_tok_s": sum(tokens) / sum(times),
    }


class JunctureSteps:
    """juncture's GRPO trainer, stepped from outside so its steps can interleave with TRL's."""

    def __init__(self, cfg: RunConfig, train_tasks, run_dir: str):
        policy = HFPolicy.load(cfg.model, log=lambda *_: None)
        self.trainer = Trainer(cfg, policy, {}, train_tasks, Path(run_dir))
        self.times: list[float] = []
        self.tokens: list[int] = []
        self.rollout: list[float] = []

    def step(self) -> None:
        step = len(self.times)
        t0 = time.perf_counter()
        m = self.trainer.train_step(step)
        self.times.append(time.perf_counter() - t0)
        self.tokens.append(m["rollout/new_tokens"])
        self.rollout.append(m["time/rollout_s"])
        print(f"  juncture step {step}: {self.times[-1]:.2f} s, {self.tokens[-1]} tokens, "
              f"reward {m['rollout/reward']:.2f}" + (" (warm-up)" if step == 0 else ""), flush=True)


def run_both(cfg: RunConfig, train_tasks, args, run_dir: str) -> tuple[dict, dict]:
    """TRL's trainer drives the loop; after each of its steps, one juncture step runs (untimed by TRL)."""
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    path = str(resolve_model("default", log=lambda *_: None)[0])
    index = {t.id: t for t in train_tasks}
    data = Dataset.from_list([{"prompt": build_messages(t.question, [], cfg.agent.prompt), "task_id": t.id}
                              for t in train_tasks])
    tokens: list[int] = []
    juncture = JunctureSteps(cfg, train_tasks, run_dir)

    def reward(completions, completion_ids, task_id, **_):
        """juncture's own reward (answer tag + reasoning-gym verifier + format bonus)."""
        tokens.append(sum(len(ids) for ids in completion_ids))
        texts = [c[-1]["content"] if isinstance(c, list) else c for c in completions]
        return [compute_reward(index[tid], text, cfg.reward, ids).total
                for text, ids, tid in zip(texts, completion_ids, task_id, strict=True)]

    class Interleave(TrainerCallback):
        times: list[float] = []

        def on_step_begin(self, *_, **__):
            self.t0 = time.perf_counter()

        def on_step_end(self, *_, **__):
            self.times.append(time.perf_counter() - self.t0)
            step = len(self.times) - 1
            print(f"  trl step {step}: {self.times[-1]:.2f} s, {tokens[-1]} tokens"
                  + (" (warm-up)" if step == 0 else ""), flush=True)
            juncture.step()

    class TimedGRPO(GRPOTrainer):
        rollout_times: list[float] = []

        def _generate_and_score_completions(self, inputs):
            t0 = time.perf_counter()
            out = super()._generate_and_score_completions(inputs)
            self.rollout_times.append(time.perf_counter() - t0)
            return out

    n = args.prompts * args.group
    targs = GRPOConfig(
        output_dir=str(Path(run_dir) / "trl"), report_to="none", save_strategy="no",
        logging_steps=1, disable_tqdm=True, use_cpu=True, seed=args.seed, max_steps=args.steps + 1,
        bf16=args.dtype == "bfloat16", gradient_checkpointing=False, use_vllm=False,
        per_device_train_batch_size=n, gradient_accumulation_steps=1, generation_batch_size=n,
        num_generations=args.group, max_completion_length=args.max_tokens,
        temperature=1.0, top_p=1.0, top_k=0, learning_rate=args.lr, lr_scheduler_type="constant",
        warmup_steps=0, weight_decay=0.0, optim="adamw_torch", max_grad_norm=1.0,
        beta=0.0, num_iterations=1, epsilon=0.2, epsilon_high=0.28, loss_type="dapo", scale_rewards="group",
        log_completions=False, dataloader_num_workers=0,
    )
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    timer = Interleave()
    trainer = TimedGRPO(model=model, processing_class=AutoTokenizer.from_pretrained(path), reward_funcs=reward,
                        args=targs, train_dataset=data, callbacks=[timer])
    trainer.train()
    return (summarize("juncture", juncture.times[1:], juncture.tokens[1:], juncture.rollout[1:]),
            summarize("trl", timer.times[1:], tokens[1:], trainer.rollout_times[1:]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--prompts", type=int, default=2, help="prompts per step (P)")
    ap.add_argument("--group", type=int, default=4, help="samples per prompt (G)")
    ap.add_argument("--max-tokens", type=int, default=64, help="max completion length (L)")
    ap.add_argument("--steps", type=int, default=3, help="timed steps, after one warm-up step")
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    ap.add_argument("--lr", type=float, default=1e-6)
    args, env = parse_and_setup(ap, seed=True)

    cfg = make_config(args)
    train_tasks, _ = build_tasks(cfg.task)
    print(f"{args.steps + 1} steps each, interleaved: trl step k, then juncture step k", flush=True)
    with tempfile.TemporaryDirectory() as run_dir:
        j, t = run_both(cfg, train_tasks, args, run_dir)
    rows = [j, t, {"impl": "juncture/trl", **{k: j[k] / t[k] for k in ("step_s", "rollout_s", "update_s",
                                                                      "gen_tokens", "gen_tok_s")}}]
    env["load_avg_1m_end"] = os.getloadavg()[0]
    print(f"\nSmolLM2-135M-Instruct, {args.dtype}, P={args.prompts} G={args.group} L={args.max_tokens}, "
          f"{env['threads']} threads, torch {env['torch']}, transformers {env['transformers']}, "
          f"trl {env.get('trl')}; mean over {args.steps} steps after 1 warm-up, "
          f"load avg {env['load_avg_1m']:.1f} at start, {env['load_avg_1m_end']:.1f} at end\n")
    print(markdown_table(rows, ["impl", "step_s", "min_step_s", "rollout_s", "update_s", "gen_tokens", "gen_tok_s"]))
    write_json(args.json, {"env": env, "args": vars(args), "results": rows})


if __name__ == "__main__":
    main()
