"""Credit assigners: turn rewards of a rollout batch into per-token advantages."""

from juncture.credit import grpo  # noqa: F401  (registers "grpo")
from juncture.credit.base import CREDIT, CreditAssigner, token_advantages

__all__ = ["CREDIT", "CreditAssigner", "token_advantages"]
