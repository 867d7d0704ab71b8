"""Integration: the Trainer with branching on the tiny model, a scripted first tool call and a counting tool."""

from __future__ import annotations

import json

import pytest
import torch
from test_sampling import logprobs_and_entropy

from juncture.config import load_config
from juncture.policy.base import Generation
from juncture.policy.hf import HFPolicy
from juncture.tasks import build_tasks
from juncture.tools import ToolResult
from juncture.train.rl import Trainer
from juncture.tree import group_by

SCRIPT = "<python>print(1+2)</python>"


class CountingPython:
    """Stands in for the sandbox: answers instantly and records every execution."""

    name = "python"

    def __init__(self):
        self.queries: list[str] = []

    def __call__(self, query: str) -> ToolResult:
        self.queries.append(query)
        return ToolResult("3", ok=True)


def script_first_turn(policy: HFPolicy, text: str = SCRIPT) -> None:
    """Make every response open with a tool call, so later fork points have tool results in their prefix.

    The scripted tokens carry the model's own teacher-forced log-probs and entropies, as if sampled.
    """
    tok, real = policy.tokenizer, policy.generate
    script = tok.encode(text, add_special_tokens=False)
    opener = tok.encode("<|im_start|>assistant\n", add_special_tokens=False)

    def generate(prompts, budgets, params, generator=None):
        outs = real(prompts, budgets, params, generator)
        for i, p in enumerate(prompts):
            if p[-len(opener) :] == opener and budgets[i] >= len(script):
                ids = torch.tensor([p + script], device=policy.device)
                with torch.no_grad():
                    logits = policy.gen_model(input_ids=ids).logits[0, len(p) - 1 : -1] / params.temperature
                lp, ent = logprobs_and_entropy(logits, torch.tensor(script, device=policy.device))
                outs[i] = Generation(list(script), lp.tolist(), ent.tolist(), "stop", "</python>")
        return outs

    policy.generate = generate


def make_trainer(tiny_model_dir, run_dir, *extra):
    cfg = load_config(None, [
        f"run_dir={run_dir}", f"model.path={tiny_model_dir}", "model.dtype=float32", "task.name=reasoning_gym:chain_sum",
        "task.train_size=8", "task.eval_size=2", "agent.tools=[python]", "agent.prompt=plain", "agent.max_new_tokens=32",
        "agent.max_turn_tokens=16", "agent.max_turns=3", "agent.max_tool_calls=2", "algorithm.group_size=4",
        "algorithm.n_initial=2", "train.prompts_per_step=2", "train.micro_batch_size=8", "train.updates_per_step=2",
        "optim.lr=1e-3", "sft.enabled=false", "logging.progress=false", *extra,
    ])
    policy = HFPolicy.load(cfg.model)
    script_first_turn(policy)
    tool = CountingPython()
    train_tasks, _ = build_tasks(cfg.task)
    return Trainer(cfg, policy, {"python": tool}, train_tasks, run_dir), tool


@pytest.mark.parametrize("extra", [
    ["algorithm.branching=appo", "algorithm.credit=appo"],
    ["algorithm.branching=tool_boundary", "algorithm.credit=grpo", "algorithm.branch.include_token=false",
     "algorithm.branch.train_on_branch_rows=true"],
], ids=["appo", "tool_boundary"])
def test_branching_trainer_steps(tiny_model_dir, tmp_path, extra):
    trainer, tool = make_trainer(tiny_model_dir, tmp_path / "run", *extra)
    include_token = trainer.cfg.algorithm.branch.include_token
    inherited_total = 0
    for step in range(2):
        trajs, metrics = trainer.rollout(step)
        groups = group_by(trajs)
        assert len(groups) == 2 and all(len(g) == 4 for g in groups.values())
        assert all(sum(t.kind == "initial" for t in g) == 2 for g in groups.values())
        by_id = {t.traj_id: t for t in trajs}
        executed = sum(len(t.tool_calls) for t in trajs if t.kind == "initial")
        for b in (t for t in trajs if t.kind == "branch"):
            parent, end = by_id[b.parent_id], b.fork_pos + 1
            assert b.tokens[:end] == parent.tokens[:end] and b.sources[:end] == parent.sources[:end]
            inherited = [c for c in parent.tool_calls if c.result_end <= end]
            assert b.tool_calls[: len(inherited)] == inherited
            executed += len(b.tool_calls) - len(inherited)
            inherited_total += len(inherited)
            if not include_token:
                assert parent.sources[b.fork_pos + 1] == 1  # the selected model token is resampled
        assert len(tool.queries) == executed  # prefix calls were reused, not re-run
        tool.queries.clear()
        assert metrics["rollout/rows_per_prompt"] == 4
        json.dumps(metrics)  # every metric is a plain number the metrics log can write
        assert abs(sum(metrics[f"fork/where/{r}"] for r in ("after_result", "tool_call", "think", "other")) - 1) < 1e-9
        update = trainer.update(trajs)
        assert update["train/rows"] > 0
        if trainer.cfg.algorithm.credit == "appo":
            assert 1.0 <= update["train/omega_loss"] <= 1.2
            if step == 0:  # no weights before the first update: Ω ≡ 1, every rollout ranked by entropy
                assert metrics["fork/omega_degenerate"] == 4 and metrics["fork/omega_std"] == 0
    assert inherited_total > 0  # some branch did start after a tool result


def test_previous_step_omega_after_an_update_and_across_a_resume(tiny_model_dir, tmp_path):
    """Even-token reward varies even for a random model, so the first update moves the weights."""
    args = ["algorithm.branching=appo", "algorithm.credit=appo", "task.name=toy:even_tokens", "train.updates_per_step=1"]
    trainer, _ = make_trainer(tiny_model_dir, tmp_path / "run", *args)
    json.dumps(trainer.train_step(0))
    trainer.save(1)
    _, metrics = trainer.rollout(1)
    assert metrics["fork/omega_degenerate"] == 0 and metrics["fork/omega_std"] > 0
    resumed, _ = make_trainer(tiny_model_dir, tmp_path / "run", *args)
    assert resumed.resume() and resumed.start_step == 1
    before, after = trainer.prev_model.state_dict(), resumed.prev_model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert not all(torch.equal(before[k], trainer.policy.model.state_dict()[k]) for k in before)
