"""Policy-gradient loss: PPO clip with separate low/high ε (DAPO), optional dual-clip and k3 KL,
and APPO's procedure-level advantage scaling Ã = A·(1 + b·Ω^loss).

Aggregation is expressed as per-token weights computed over the whole mini-batch, so summing
micro-batch losses gives exactly the mini-batch loss whatever the micro-batch split.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from juncture.config import LossConfig, OmegaLossConfig


def discounted_suffix_sum(x: torch.Tensor, gamma: float, window: int | None = None) -> torch.Tensor:
    """y_t = Σ_{t <= k < t + window} γ^(k−t)·x_k along the last dim, in O(L) (float64 inside).

    The reference builds an L×L decay matrix (O(L²)). Here y_t = γ^(−t)·Σ_{k>=t} γ^k·x_k is a reverse
    cumsum, done on chunks short enough that γ^(±chunk) stays far from float64 under/overflow, each
    chunk adding the discounted sum of the later ones. A window subtracts γ^W·y_{t+W}.
    """
    x64 = x.detach().to(torch.float64)
    n = x64.shape[-1]
    if gamma == 1.0:
        y = x64.flip(-1).cumsum(-1).flip(-1)
    else:
        chunk = max(1, int(150 / -math.log10(gamma)))
        y = torch.empty_like(x64)
        carry = torch.zeros(x64.shape[:-1], dtype=torch.float64, device=x64.device)  # y at the first position of the next chunk
        for end in range(n, 0, -chunk):
            start = max(0, end - chunk)
            j = torch.arange(end - start, dtype=torch.float64, device=x64.device)
            w = gamma**j
            local = (x64[..., start:end] * w).flip(-1).cumsum(-1).flip(-1) / w
            y[..., start:end] = local + carry[..., None] * gamma ** (end - start - j)
            carry = y[..., start]
    if window is not None and window < n:
        y = torch.cat([y[..., : n - window] - gamma**window * y[..., window:], y[..., n - window :]], dim=-1)
    return y.to(x.dtype)


def omega_loss(
    logp: torch.Tensor, old_logp: torch.Tensor, adv: torch.Tensor, mask: torch.Tensor, cfg: OmegaLossConfig
) -> tuple[torch.Tensor, torch.Tensor]:
    """Ω^loss (appo.md §8, detached) and exp(FutureKL) before clipping; inputs [B, T].

    Δ_k = clamp(log πθ − log πold, ±20); only loss tokens with Δ_k <= log c enter
    FutureKL_t = Σ_{k>=t} γ^(k−t)·Δ_k, γ = 2^(−1/decay_rate); Ω = clip(exp(FutureKL), lo, 1 + clip).
    Where A < 0 and the ratio exceeds the safety threshold, Ω is capped at 1.
    """
    delta = (logp - old_logp).detach().clamp(-20, 20)
    part = (delta <= math.log(cfg.participation_c)).float()
    future = discounted_suffix_sum(delta * part * mask, 2.0 ** (-1.0 / cfg.decay_rate))
    raw = future.clamp(-20, 20).exp()
    lo, hi = (1.0 if cfg.clip_high_only else 1.0 - cfg.clip), 1.0 + cfg.clip
    omega = raw.clamp(lo, hi)
    omega = torch.where((adv < 0) & (delta.exp() > cfg.safety_thresh), omega.clamp(max=1.0), omega)
    return omega, raw


def token_weights(loss_masks: list[np.ndarray], agg: str, max_new_tokens: int) -> list[np.ndarray]:
    """Weights w (one array per row) such that loss = Σ w·L_t realises the aggregation mode."""
    n_tok = sum(float(m.sum()) for m in loss_masks)
    n_seq = len(loss_masks)
    out = []
    for m in loss_masks:
        m = np.asarray(m, dtype=np.float64)
        if agg == "token-mean":
            w = m / max(n_tok, 1)
        elif agg == "seq-mean-token-mean":
            w = m / (max(float(m.sum()), 1.0) * n_seq)
        elif agg == "seq-mean-token-sum-norm":
            w = m / (n_seq * max_new_tokens)
        else:
            raise ValueError(f"unknown loss aggregation {agg!r}")
        out.append(w)
    return out


def k3_kl(logp: torch.Tensor, ref_logp: torch.Tensor) -> torch.Tensor:
    """Schulman's k3 estimator of KL(π_θ || π_ref) per sampled token (non-negative, low variance)."""
    d = (ref_logp - logp).clamp(-10, 10)
    return d.exp() - d - 1


def policy_loss(
    logp: torch.Tensor,
    old_logp: torch.Tensor,
    adv: torch.Tensor,
    weights: torch.Tensor,
    cfg: LossConfig,
    ref_logp: torch.Tensor | None = None,
    entropy: torch.Tensor | None = None,
    omega: OmegaLossConfig | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Weighted sum of per-token losses, plus sums over loss tokens for logging (all inputs [B, T]).

    With `omega` (APPO), the advantage is first scaled by 1 + b·Ω^loss (optionally over 1 + b).
    """
    mask = (weights > 0).float()
    extra = {}
    if omega is not None and omega.weight_b > 0:
        om, raw = omega_loss(logp, old_logp, adv, mask, omega)
        adv = adv * (1 + omega.weight_b * om)
        if omega.normalize_by_1_plus_b:
            adv = adv / (1 + omega.weight_b)
        lo = 1.0 if omega.clip_high_only else 1.0 - omega.clip
        extra = {"omega_loss": (om * mask).sum(), "omega_loss_clip_high": ((raw > 1 + omega.clip).float() * mask).sum(),
                 "omega_loss_clip_low": ((raw < lo).float() * mask).sum()}
    ratio = torch.exp((logp - old_logp).clamp(-20, 20))
    pg1 = -adv * ratio
    pg2 = -adv * ratio.clamp(1 - cfg.clip_low, 1 + cfg.clip_high)
    per_token = torch.maximum(pg1, pg2)
    clipped = (pg2 > pg1).float()
    if cfg.dual_clip_c is not None:
        cap = -adv * cfg.dual_clip_c
        dual = (adv < 0) & (per_token > cap)
        per_token = torch.where(adv < 0, torch.minimum(per_token, cap), per_token)
        clipped = torch.maximum(clipped, dual.float())
    stats = {"tokens": mask.sum(), "clip_frac": (clipped * mask).sum().detach(), "ratio": (ratio * mask).sum().detach(),
             **extra}
    if ref_logp is not None and cfg.kl_coef > 0:
        kl = k3_kl(logp, ref_logp)
        per_token = per_token + cfg.kl_coef * kl
        stats["kl"] = (kl * mask).sum().detach()
    if entropy is not None and cfg.entropy_coef:
        per_token = per_token - cfg.entropy_coef * entropy
    loss = (per_token * weights).sum()
    return loss, stats
