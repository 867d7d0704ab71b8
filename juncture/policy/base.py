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

