"""End-to-end training on the tiny random model: RL really optimises, runs resume exactly."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from juncture.config import load_config
from juncture.policy.hf import HFPolicy
from juncture.tasks import build_tasks
from juncture.train.metrics import read_metrics
from juncture.train.pipeline import RunDirError, run_training
from juncture.train.rl import Trainer


def toy_config(tiny_model_dir, tmp_path, *extra):
    """GRPO on the tiny model (the quickstart's default algorithm is APPO)."""
    return load_config(None, [
        "algorithm.branching=none", "algorithm.credit=grpo", "algorithm.n_initial=null",
        f"run_dir={tmp_path / 'run'}", f"model.path={tiny_model_dir}", "model.dtype=float32",
        "task.name=toy:even_tokens", "task.train_size=64", "task.eval_size=4", "agent.tools=[]", "agent.prompt=plain",
        "agent.max_new_tokens=16", "agent.max_turn_tokens=16", "algorithm.group_size=8", "train.prompts_per_step=4",
        "train.micro_batch_size=16", "optim.lr=3e-3", "sft.enabled=false", "logging.progress=false", *extra,
    ])


def test_grpo_raises_reward_on_a_task_with_known_optimum(tiny_model_dir, tmp_path):
    """Reward = fraction of even token ids (optimum 1.0, random start ≈ 0.5).

    Top-k sampling gives the random model a small support per context, as a pretrained model has;
    over the full 49k vocabulary each step samples fresh tokens and no policy is learnable in 12 steps.
    """
    cfg = toy_config(tiny_model_dir, tmp_path, "sampling.top_k=20", "optim.lr=1e-2")
    policy = HFPolicy.load(cfg.model)
    train_tasks, _ = build_tasks(cfg.task)
    trainer = Trainer(cfg, policy, {}, train_tasks, tmp_path / "run")
    rewards = [trainer.train_step(step)["rollout/reward"] for step in range(12)]
    start, end = rewards[0], np.mean(rewards[-3:])  # step 0 samples before any update
    assert 0.35 < start < 0.65, rewards
    assert end > 0.9 and end > start + 0.3, rewards


def _final_params(run_dir):
    latest = (run_dir / "checkpoints" / "latest").read_text().strip()
    return load_file(str(run_dir / "checkpoints" / latest / "model.safetensors"))


def test_pipeline_runs_and_resume_matches_an_uninterrupted_run(tiny_model_dir, tmp_path):
    common = ["task.name=reasoning_gym:chain_sum", "task.train_size=40", "task.eval_size=4", "agent.tools=[python]",
              "agent.prompt=fewshot", "agent.max_new_tokens=24", "agent.max_turn_tokens=12", "algorithm.group_size=2",
              "train.prompts_per_step=2", "sft.enabled=true", "sft.steps=2", "sft.num_demos=4", "sft.batch_size=2",
              "loss.kl_coef=0.01", "train.updates_per_step=2", "train.micro_batch_size=2"]
    straight = toy_config(tiny_model_dir, tmp_path / "a", *common, "train.steps=4")
    summary = run_training(straight)
    run_a = tmp_path / "a" / "run"
    for name in ("config.yaml", "metrics.jsonl", "summary.json", "eval_before.json", "eval_after.json", "sft/model"):
        assert (run_a / name).exists(), name
    assert [m["step"] for m in read_metrics(run_a / "metrics.jsonl")] == [1, 2, 3, 4]
    assert summary["tokens_generated"] > 0 and "reward" in summary["eval_after"]
    assert len(list((run_a / "rollouts").glob("step_*.jsonl.gz"))) == 4

    # interrupted after step 2, then resumed to step 4
    first = toy_config(tiny_model_dir, tmp_path / "b", *common, "train.steps=2")
    run_training(first)
    run_b = tmp_path / "b" / "run"
    with pytest.raises(RunDirError, match="--resume"):
        run_training(first)
    with pytest.raises(RunDirError, match="optim.lr"):
        run_training(toy_config(tiny_model_dir, tmp_path / "b", *common, "train.steps=4", "optim.lr=1"), resume=True)
    with open(run_b / "metrics.jsonl", "a") as f:  # a torn line, as a crash mid-write leaves
        f.write('{"step": 3, "rollout/rew')
    (run_b / "eval_after.json").unlink()
    run_training(toy_config(tiny_model_dir, tmp_path / "b", *common, "train.steps=4"), resume=True)
    assert [m["step"] for m in read_metrics(run_b / "metrics.jsonl")] == [1, 2, 3, 4]
    a, b = _final_params(run_a), _final_params(run_b)
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    steps_a = [json.dumps({k: v for k, v in m.items() if not k.startswith("time/")}) for m in read_metrics(run_a / "metrics.jsonl")]
    steps_b = [json.dumps({k: v for k, v in m.items() if not k.startswith("time/")}) for m in read_metrics(run_b / "metrics.jsonl")]
    assert steps_a == steps_b
