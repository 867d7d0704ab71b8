"""One decode step's sampling: the token, its log-prob and the full-vocabulary entropy, in one pass.

`torch.multinomial` on a CPU draws an exponential variate for every vocabulary entry of every
row (49k per row for SmolLM2): at batch 16 that was a quarter of a decode step. Inverse-CDF
sampling draws ONE uniform per row and finds it in the cumulative distribution: the same
categorical distribution at the cost of a cumulative sum. The uniforms come from the caller's
CPU generator whatever the model's device, so a seed gives the same stream on CPU and GPU.
"""

from __future__ import annotations

import torch

from juncture.policy.base import SamplingParams


def sample_step(
    logits: torch.Tensor, params: SamplingParams, generator: torch.Generator | None = None,
    scratch: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(tokens [n], log-probs [n], entropies [n]) for last-position logits [n, V].

    Log-prob and entropy are under the temperature-scaled distribution before top-k/top-p
    truncation (see `Generation`); the token is drawn from the truncated one. `scratch`, fp32
    [2, >= n, V], holds the log-probabilities and probabilities instead of new tensors: a decode
    loop passes the same one every step, because on a CPU each fresh multi-megabyte tensor
    page-faults in again (see `new_scratch`).
    """
    n = logits.shape[0]
    scratch = new_scratch(n, logits.shape[1], logits.device) if scratch is None else scratch
    logp, probs = scratch[0, :n], scratch[1, :n]
    logp.copy_(logits)  # fp32 from here on
    if params.greedy:
        tokens = logp.argmax(-1)
    elif params.temperature != 1.0:
        logp.div_(params.temperature)
    top = logp.amax(-1, keepdim=True)
    total = torch.sub(logp, top, out=probs).exp_().sum(-1, keepdim=True)
    logp.sub_(top + total.log())  # log-softmax, in place
    probs.div_(total)  # softmax
    entropy = -(probs[:, None, :] @ logp[:, :, None]).view(n)  # a dot product per row: no [n, V] temporary
    if not params.greedy:
        tokens = inverse_cdf(truncate(probs, params), generator)
    return tokens, logp.gather(-1, tokens[:, None]).squeeze(-1), entropy


def new_scratch(rows: int, vocab: int, device: torch.device) -> torch.Tensor:
    """The `scratch` of sample_step for up to `rows` rows."""
    return torch.empty((2, rows, vocab), dtype=torch.float32, device=device)


def truncate(probs: torch.Tensor, params: SamplingParams) -> torch.Tensor:
    """Zero the tokens top-k and top-p exclude (unnormalized weights; ties at the k-th value are kept)."""
    if params.top_k and params.top_k < probs.shape[-1]:
        kth = torch.topk(probs, params.top_k).values[:, -1:]
        probs = probs.masked_fill(probs < kth, 0.0)
    if params.top_p < 1.0:
        total = probs.sum(-1, keepdim=True)
        sorted_p, order = probs.sort(dim=-1, descending=True)
        drop = sorted_p.cumsum(-1) - sorted_p > params.top_p * total
        probs = torch.zeros_like(probs).scatter(-1, order, sorted_p.masked_fill(drop, 0.0))
    return probs


def inverse_cdf(weights: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """One index per row of non-negative `weights` [n, V], drawn with probability proportional to its weight.

    Two levels, because a cumulative sum is sequential along the row: pick a block of BLOCK
    entries by the blocks' sums, then the entry inside it with the uniform's remainder.
    """
    n, v = weights.shape
    u = torch.rand((n, 1), generator=generator, dtype=torch.float64).to(weights.device)
    padded = weights if v % BLOCK == 0 else torch.nn.functional.pad(weights, (0, -v % BLOCK))
    blocks = padded.reshape(n, -1, BLOCK)
    # block sums in the weights' dtype, then float64: summing with dtype=float64 would first copy all n x V
    block, u = _pick(blocks.sum(-1).double(), u)
    inner, _ = _pick(blocks[torch.arange(n, device=weights.device), block].double(), u)
    return block * BLOCK + inner


BLOCK = 256


def _pick(weights: torch.Tensor, u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per row, the index i whose cumulative interval holds u * total, and where inside it: a fraction in [0, 1).

    The fraction is again uniform given i, so it can pick inside entry i. nextafter keeps the
    target below the total, so rounding can never land on a zero-weight entry at the end.
    """
    cdf = weights.cumsum(-1)
    total = cdf[:, -1:]
    below_one = torch.nextafter(torch.ones_like(total), torch.zeros_like(total))
    target = torch.minimum(u * total, torch.nextafter(total, torch.zeros_like(total)))
    idx = torch.searchsorted(cdf, target, right=True)
    w = weights.gather(-1, idx)
    frac = (target - cdf.gather(-1, idx) + w) / w
    return idx.squeeze(-1), torch.minimum(frac.clamp(min=0.0), below_one)
