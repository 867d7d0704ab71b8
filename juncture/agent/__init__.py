"""The multi-turn agent: tag protocol, prompts and the rollout loop."""

from juncture.agent.loop import AgentLimits, continue_rollouts, encode_prompt, new_trajectories
from juncture.agent.protocol import STOP_STRINGS, build_messages, parse_tool_call

__all__ = [
    "STOP_STRINGS",
    "AgentLimits",
    "build_messages",
    "continue_rollouts",
    "encode_prompt",
    "new_trajectories",
    "parse_tool_call",
]
