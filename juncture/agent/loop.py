"""The multi-turn agent loop: generate until a tool tag closes, run the tool, insert its result, repeat.

`continue_rollouts` works on trajectories that may already hold part of a response, so the
same loop serves fresh rollouts and branches forked from a prefix (whose tool results are
kept, never re-executed).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import torch

from juncture.agent.protocol import ANSWER_STOP, STOP_STRINGS, build_messages, parse_tool_call, result_text
from juncture.config import AgentConfig, SamplingConfig
from juncture.policy.base import Policy, SamplingParams
from juncture.tasks import Task
from juncture.tools import Tool, ToolResult
from juncture.tree import Source, ToolCall, Trajectory


@dataclass
class AgentLimits:
    max_turns: int
    max_tool_calls: int
    max_new_tokens: int
    max_turn_tokens: int
    max_tool_result_tokens: int

    @classmethod
    def from_config(cls, cfg: AgentConfig) -> AgentLimits:
        return cls(cfg.max_turns, cfg.max_tool_calls, cfg.max_new_tokens, cfg.max_turn_tokens, cfg.max_tool_result_tokens)


def encode_prompt(tokenizer, task: Task, tools: list[str], template: str) -> list[int]:
    messages = build_messages(task.question, tools, template)
    ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
    if not isinstance(ids, list):  # some tokenizers return a BatchEncoding
        ids = ids["input_ids"]
    return list(ids)


def new_trajectories(
    tokenizer, tasks: list[Task], group_size: int, agent: AgentConfig, step: int = 0
) -> list[Trajectory]:
    """`group_size` empty trajectories per task, each holding only the prompt."""
    trajs = []
    for k, task in enumerate(tasks):
        tools = [t for t in agent.tools if t in task.tools] or list(agent.tools)
        prompt = encode_prompt(tokenizer, task, tools, agent.prompt)
        group = f"s{step}-p{k}"
        for g in range(group_size):
            trajs.append(Trajectory.from_prompt(prompt, f"{group}-r{g}", group, task.id))
    return trajs


def continue_rollouts(
    policy: Policy,
    trajs: list[Trajectory],
    tools: dict[str, Tool],
    limits: AgentLimits,
    sampling: SamplingConfig,
    generator: torch.Generator | None = None,
    greedy: bool = False,
    max_batch: int = 64,
    on_round: Callable[[int], None] | None = None,
) -> list[Trajectory]:
    """Run every trajectory to completion (answer, EOS or a limit); returns the same list."""
    params = SamplingParams(sampling.temperature, sampling.top_p, sampling.top_k, STOP_STRINGS, greedy)
    tok = policy.tokenizer
    for t in trajs:  # a branch forked at its parent's last allowed token has nothing left to generate
        if not t.finish_reason and t.num_model_tokens >= limits.max_new_tokens:
            t.finish_reason = "max_new_tokens"
    active = [t for t in trajs if not t.finish_reason]
    with ThreadPoolExecutor(max_workers=8) as pool:
        while active:
            for start in range(0, len(active), max_batch):
                chunk = active[start : start + max_batch]
                budgets = [min(limits.max_turn_tokens, limits.max_new_tokens - t.num_model_tokens) for t in chunk]
                gens = policy.generate([t.tokens for t in chunk], budgets, params, generator)
                pending = []
                for traj, gen in zip(chunk, gens, strict=True):
                    traj.append(gen.tokens, Source.MODEL, gen.logprobs, gen.entropies)
                    request = _after_turn(traj, gen, limits, tok)
                    if request is not None:
                        pending.append((traj, request))
                futures = [pool.submit(_run_tool, tools, req) for _, req in pending]
                for (traj, req), fut in zip(pending, futures, strict=True):
                    _insert_result(traj, req, fut.result(), tok, limits)
            if on_round:
                on_round(sum(1 for t in active if t.finish_reason))
            active = [t for t in active if not t.finish_reason]
    for t in trajs:
        t.check()
    return trajs


def _after_turn(traj: Trajectory, gen, limits: AgentLimits, tok):
    """Decide what follows a generated turn: finish, or a tool request to execute."""
    if gen.finish_reason == "eos":
        traj.finish_reason = "eos"
    elif gen.stop == ANSWER_STOP:
        traj.finish_reason = "answer"
    elif gen.finish_reason == "stop":
        if len(traj.tool_calls) >= limits.max_tool_calls:
            traj.finish_reason = "max_tool_calls"
        elif traj.turn + 1 >= limits.max_turns:
            traj.finish_reason = "max_turns"
        else:
            return parse_tool_call(tok.decode(traj.tokens[traj.turn_start() :]), gen.stop)
    elif traj.num_model_tokens >= limits.max_new_tokens:
        traj.finish_reason = "max_new_tokens"
    else:
        traj.finish_reason = "max_turn_tokens"
    return None


def _run_tool(tools: dict[str, Tool], req) -> tuple[ToolResult, float]:
    start = time.perf_counter()
    if req.error:
        result = ToolResult(f"error: {req.error}", ok=False, error="bad_query")
    elif req.name not in tools:
        available = ", ".join(sorted(tools)) or "none"
        result = ToolResult(f"error: tool '{req.name}' is not available here (available: {available})", ok=False,
                            error="unknown_tool")
    else:
        try:
            result = tools[req.name](req.query)
        except Exception as e:  # a tool must never take the run down; record and go on
            result = ToolResult(f"error: tool '{req.name}' crashed: {type(e).__name__}", ok=False, error="crash")
    return result, time.perf_counter() - start


def _insert_result(traj: Trajectory, req, outcome: tuple[ToolResult, float], tok, limits: AgentLimits) -> None:
    result, seconds = outcome
    ids = tok.encode(result.output, add_special_tokens=False)
    output = result.output
    if len(ids) > limits.max_tool_result_tokens:  # keep both ends: errors and tracebacks come last
        head = limits.max_tool_result_tokens // 2
        tail = limits.max_tool_result_tokens - head
        output = tok.decode(ids[:head]) + " …[truncated]… " + tok.decode(ids[-tail:])
    ids = tok.encode(result_text(output), add_special_tokens=False)
    start = len(traj)
    traj.append(ids, Source.TOOL)
    traj.tool_calls.append(ToolCall(req.name, req.query, output, result.ok, result.error, traj.turn, start, len(traj), seconds))
    traj.new_turn()
