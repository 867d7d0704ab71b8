"""Rewards: answer extraction, format checks and verifiers (exact match, F1, math, reasoning-gym)."""

from juncture.rewards.reward import RewardBreakdown, check_format, compute_reward, extract_answer
from juncture.rewards.verifiers import (
    exact_match,
    extract_boxed,
    math_equal,
    normalize_answer,
    score_answer,
    token_f1,
)

__all__ = [
    "RewardBreakdown",
    "check_format",
    "compute_reward",
    "exact_match",
    "extract_answer",
    "extract_boxed",
    "math_equal",
    "normalize_answer",
    "score_answer",
    "token_f1",
]
