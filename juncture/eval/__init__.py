"""Evaluation: run the agent with evaluation decoding on held-out tasks and score it."""

from juncture.eval.evaluate import evaluate

__all__ = ["evaluate"]
