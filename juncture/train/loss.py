"""Policy-gradient loss: PPO clip with separate low/high ε (DAPO), optional dual-clip and k3 KL.

Aggregation is expressed as per-token weights computed over the whole mini-batch, so summing
micro-batch losses gives exactly the mini-batch loss whatever the micro-batch split.
"""

from __future__ import annotations

import numpy as np
import torch

from juncture.config import LossConfig


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
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Weighted sum of per-token losses, plus sums over loss tokens for logging (all inputs [B, T])."""
    mask = (weights > 0).float()
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
    stats = {"tokens": mask.sum(), "clip_frac": (clipped * mask).sum().detach(), "ratio": (ratio * mask).sum().detach()}
    if ref_logp is not None and cfg.kl_coef > 0:
        kl = k3_kl(logp, ref_logp)
        per_token = per_token + cfg.kl_coef * kl
        stats["kl"] = (kl * mask).sum().detach()
    if entropy is not None and cfg.entropy_coef:
        per_token = per_token - cfg.entropy_coef * entropy
    loss = (per_token * weights).sum()
    return loss, stats
