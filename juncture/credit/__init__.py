"""Credit assigners: turn rewards of a rollout batch into per-token advantages."""

from juncture.credit import appo, grpo  # noqa: F401  (register "appo", "grpo")
from juncture.credit.base import CREDIT, CreditAssigner, token_advantages, train_mask

__all__ = ["CREDIT", "CreditAssigner", "token_advantages", "train_mask"]
