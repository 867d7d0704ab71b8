"""The agent loop with a scripted policy: tool results, limits, malformed calls, branches."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from juncture.agent import AgentLimits, continue_rollouts, new_trajectories
from juncture.agent.protocol import STOP_STRINGS, parse_tool_call
from juncture.config import AgentConfig, SamplingConfig
from juncture.policy.base import Generation, check_budgets
from juncture.tasks import Task
from juncture.tools import ToolResult
from juncture.tree import Source

TASK = Task(id="t1", question="What is 3 + 4?", answer="7", verifier="math")


class ScriptedPolicy:
    """Emits scripted text turns, cut at stop strings and at the token budget like the real backend."""

    def __init__(self, tokenizer, turns):
        self.tokenizer = tokenizer
        self.turns = list(turns)
        self.calls = 0

    def generate(self, prompts, max_new_tokens, params, generator=None):
        check_budgets(prompts, max_new_tokens)  # the backends' contract
        out = []
        for budget in max_new_tokens:
            text = self.turns[min(self.calls, len(self.turns) - 1)]
            self.calls += 1
            ids = self.tokenizer.encode(text, add_special_tokens=False)
            gen, acc = Generation(), ""
            for tok in ids:
                gen.tokens.append(tok)
                gen.logprobs.append(-1.0)
                gen.entropies.append(0.5)
                acc += self.tokenizer.decode([tok])
                if tok == self.tokenizer.eos_token_id:
                    gen.finish_reason = "eos"
                    break
                hit = next((s for s in params.stop_strings if s in acc), None)
                if hit:
                    gen.finish_reason, gen.stop = "stop", hit
                    break
                if len(gen.tokens) >= budget:
                    break
            out.append(gen)
        return out


class CountingTool:
    def __init__(self, output="7", raises=False):
        self.output, self.raises, self.calls = output, raises, []

    def __call__(self, query):
        self.calls.append(query)
        if self.raises:
            raise RuntimeError("boom")
        return ToolResult(self.output, ok=True)


def run(tokenizer, turns, tools, **limits):
    agent = AgentConfig(**{"max_turns": 4, "max_tool_calls": 2, "max_new_tokens": 200, "max_turn_tokens": 100, **limits})
    policy = ScriptedPolicy(tokenizer, turns)
    trajs = new_trajectories(tokenizer, [TASK], 1, agent)
    continue_rollouts(policy, trajs, tools, AgentLimits.from_config(agent), SamplingConfig())
    return trajs[0], policy


def text(tok, traj, source=None):
    ids = [t for t, s in zip(traj.tokens, traj.sources, strict=True) if source is None or s == source]
    return tok.decode(ids[traj.prompt_len :] if source is None else ids)


def test_tool_result_is_inserted_masked_and_recorded(tokenizer):
    tool = CountingTool("7")
    traj, _ = run(tokenizer, ["<python>print(3 + 4)</python>", "<answer>7</answer>"], {"python": tool})
    assert tool.calls == ["print(3 + 4)"]
    assert traj.finish_reason == "answer"
    assert "\n<result>\n7\n</result>\n" in text(tokenizer, traj, Source.TOOL)
    assert "<result>" not in text(tokenizer, traj, Source.MODEL)
    (call,) = traj.tool_calls
    assert set(traj.sources[call.result_start : call.result_end]) == {Source.TOOL}
    assert traj.loss_mask[call.result_start : call.result_end] == [0] * (call.result_end - call.result_start)
    assert traj.turns[call.result_end] == 1 and traj.turns[call.result_start] == 0


def test_unknown_and_malformed_calls_become_errors_in_the_trajectory(tokenizer):
    traj, _ = run(tokenizer, ["<search>who</search>", "print(1)</python>", "<answer>7</answer>"], {"python": CountingTool()})
    errors = [c.error for c in traj.tool_calls]
    assert errors == ["unknown_tool", "bad_query"]
    tool_text = text(tokenizer, traj, Source.TOOL)
    assert "not available" in tool_text and "malformed" in tool_text
    assert traj.finish_reason == "answer"


def test_tool_call_limit_counts_response_calls(tokenizer):
    tool = CountingTool()
    traj, _ = run(tokenizer, ["<python>1</python>"] * 5, {"python": tool}, max_tool_calls=2)
    assert len(tool.calls) == 2 and traj.finish_reason == "max_tool_calls"


def test_token_budget_and_turn_limit(tokenizer):
    traj, _ = run(tokenizer, ["blah " * 100], {}, max_new_tokens=30, max_turn_tokens=30)
    assert traj.num_model_tokens == 30 and traj.finish_reason == "max_new_tokens"
    traj, _ = run(tokenizer, ["<python>1</python>"] * 5, {"python": CountingTool()}, max_turns=2, max_tool_calls=5)
    assert traj.finish_reason == "max_turns" and len(traj.tool_calls) == 1


def test_a_branch_with_no_budget_left_finishes_without_generating(tokenizer):
    """APPO may fork at the last token of a rollout that used all of agent.max_new_tokens: the branch keeps
    the fork token and has nothing left to sample (before, the HF backend overran the limit by one token and
    vLLM refused max_tokens=0)."""
    agent = AgentConfig(max_turns=4, max_tool_calls=2, max_new_tokens=30, max_turn_tokens=30)
    parent, _ = run(tokenizer, ["blah " * 100], {}, max_new_tokens=30, max_turn_tokens=30)
    last = max(i for i, s in enumerate(parent.sources) if s == Source.MODEL)
    branch, inner = parent.branch(last, "b"), parent.branch(last - 5, "c")
    policy = ScriptedPolicy(tokenizer, ["blah " * 100])
    continue_rollouts(policy, [branch, inner], {}, AgentLimits.from_config(agent), SamplingConfig())
    assert branch.finish_reason == "max_new_tokens" and branch.tokens == parent.tokens
    assert inner.num_model_tokens == 30 and policy.calls == 1  # only the inner branch sampled
    with pytest.raises(ValueError, match=r"max_new_tokens must be >= 1 per row; rows \[1\] have \[0\]"):
        check_budgets([[1], [2]], [3, 0])


def test_a_crashing_tool_is_recorded_not_fatal(tokenizer):
    traj, _ = run(tokenizer, ["<python>x</python>", "<answer>1</answer>"], {"python": CountingTool(raises=True)})
    assert traj.tool_calls[0].error == "crash" and traj.finish_reason == "answer"


def test_branch_reuses_prefix_tool_results(tokenizer):
    tool = CountingTool("7")
    agent = AgentConfig(max_turns=4, max_tool_calls=2, max_new_tokens=200, max_turn_tokens=100)
    limits = AgentLimits.from_config(agent)
    trajs = new_trajectories(tokenizer, [TASK], 1, agent)
    continue_rollouts(ScriptedPolicy(tokenizer, ["<python>print(7)</python>", "so <answer>7</answer>"]),
                      trajs, {"python": tool}, limits, SamplingConfig())
    parent = trajs[0]
    fork = max(i for i, s in enumerate(parent.sources) if s == Source.MODEL) - 2
    branch = parent.branch(fork, "b")
    continue_rollouts(ScriptedPolicy(tokenizer, ["<answer>8</answer>"]), [branch], {"python": tool}, limits,
                      SamplingConfig())
    assert tool.calls == ["print(7)"]  # executed once, by the parent only
    assert branch.tokens[: fork + 1] == parent.tokens[: fork + 1]
    assert len(branch.tool_calls) == 1 and branch.finish_reason == "answer"
    branch.check()


def test_parse_tool_call_cases():
    assert parse_tool_call("x <python>```python\nprint(1)\n```</python>", "</python>").query == "print(1)"
    assert parse_tool_call("<python> </python>", "</python>").error == "empty <python> call"
    assert "malformed" in parse_tool_call("print(1)</python>", "</python>").error


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.one_of(st.text(max_size=40), st.sampled_from([*STOP_STRINGS, "<python>", "<answer>", "<result>"])),
                min_size=1, max_size=6))
def test_random_model_output_never_breaks_the_loop(tokenizer, pieces):
    turns = ["".join(pieces[i:] + pieces[:i]) or "x" for i in range(len(pieces))]
    traj, _ = run(tokenizer, turns, {"python": CountingTool()}, max_turns=3)
    traj.check()
    assert traj.finish_reason
