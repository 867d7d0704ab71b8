"""Rollout trees: aligned token-level trajectories and their branches."""

from juncture.tree.trajectory import Source, ToolCall, Trajectory, group_by, read_jsonl, write_jsonl

__all__ = ["Source", "ToolCall", "Trajectory", "group_by", "read_jsonl", "write_jsonl"]
