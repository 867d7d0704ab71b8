"""The policy interface shared by the generation backends (HF transformers, vLLM)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import torch


@dataclass
class SamplingParams:
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    stop_strings: tuple[str, ...] = ()
    greedy: bool = False


@dataclass
class Generation:
    """Tokens sampled for one prompt, with the log-prob and full-vocabulary entropy of each.

    Both are taken under the temperature-scaled distribution the token was drawn from,
    before top-p/top-k truncation, so the trainer can recompute them exactly.
    """

    tokens: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    entropies: list[float] = field(default_factory=list)
    finish_reason: str = "length"  # "eos" | "stop" | "length"
    stop: str | None = None


class Policy(Protocol):
    tokenizer: object
    model: torch.nn.Module

    def generate(
        self,
        prompts: list[list[int]],
        max_new_tokens: list[int],
        params: SamplingParams,
        generator: torch.Generator | None = None,
    ) -> list[Generation]: ...


def check_budgets(prompts: list[list[int]], max_new_tokens: list[int]) -> None:
    """Every row needs a budget of at least one token (backends would otherwise overrun it or refuse it)."""
    if len(max_new_tokens) != len(prompts):
        raise ValueError(f"{len(prompts)} prompts but {len(max_new_tokens)} max_new_tokens")
    bad = [i for i, n in enumerate(max_new_tokens) if n < 1]
    if bad:
        have = [max_new_tokens[i] for i in bad[:5]]
        raise ValueError(f"max_new_tokens must be >= 1 per row; rows {bad[:5]} have {have}")
