"""Pack trajectories into left-padded tensors and score them with the policy.

Left padding aligns every row's end, so only the last R positions (R = longest response)
are projected onto the vocabulary: prompts, often long few-shot prefixes, cost no logits.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from juncture.tree import Trajectory


@dataclass
class Packed:
    input_ids: torch.Tensor  # [B, T]
    attention_mask: torch.Tensor  # [B, T]
    position_ids: torch.Tensor  # [B, T]
    targets: torch.Tensor  # [B, R] the last R tokens of each row
    loss_mask: torch.Tensor  # [B, R]
    width: int  # R

    def tail(self, arrays: list[np.ndarray], fill: float = 0.0) -> torch.Tensor:
        return right_align(arrays, self.width, fill)


def right_align(arrays: list[np.ndarray], width: int, fill: float = 0.0) -> torch.Tensor:
    """Right-align per-token arrays (one per row, full length) to the [B, width] target grid; NaN -> fill."""
    out = torch.full((len(arrays), width), fill, dtype=torch.float32)
    for i, a in enumerate(arrays):
        a = np.asarray(a, dtype=np.float32)[-width:]
        out[i, width - len(a) :] = torch.from_numpy(np.nan_to_num(a, nan=fill))
    return out


def pack(rows: list[Trajectory], pad_id: int) -> Packed:
    width = max(max(len(t) - t.prompt_len for t in rows), 1)
    total = max(len(t) for t in rows)
    ids = torch.full((len(rows), total), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), total), dtype=torch.long)
    for i, t in enumerate(rows):
        ids[i, total - len(t) :] = torch.tensor(t.tokens)
        mask[i, total - len(t) :] = 1
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    packed = Packed(ids, mask, positions, ids[:, total - width :], torch.empty(0), width)
    packed.loss_mask = packed.tail([np.asarray(t.loss_mask) for t in rows])
    return packed


def score(model, packed: Packed, temperature: float, with_entropy: bool = False):
    """Log-probs of the target tokens (and optionally entropies) under `model`, [B, R]."""
    device = model.device
    logits = model(
        input_ids=packed.input_ids.to(device), attention_mask=packed.attention_mask.to(device),
        position_ids=packed.position_ids.to(device), use_cache=False, logits_to_keep=packed.width + 1,
    ).logits[:, :-1].float()
    if temperature != 1.0:
        logits = logits / temperature
    logp_all = torch.log_softmax(logits, dim=-1)
    logp = logp_all.gather(-1, packed.targets.to(device).unsqueeze(-1)).squeeze(-1)
    entropy = -(logp_all.exp() * logp_all).sum(-1) if with_entropy else None
    return logp, entropy
