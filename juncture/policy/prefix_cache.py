"""Shared-prefix prefill: encode every distinct token prefix of a batch once.

All rollouts of a group share their prompt, every prompt shares the few-shot header, and
branches share their parent's tokens up to the fork point. A radix tree over the prompts
finds these shared spans; a depth-first walk encodes each span once at batch 1, growing one
KV cache and cropping it back when it returns to a fork, and copies each prompt's KV into a
left-padded batch cache: the layout the plain padded prefill produces, so decoding (and its
numerics) is unchanged.

The walk runs one forward per tree node, so it only pays where the tokens it saves outweigh
the per-forward overhead; `plan` decides with a simple token-count cost model.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import torch
from transformers import DynamicCache

# What one extra forward costs, in prompt tokens' worth of compute. On CPU a forward's fixed
# cost (30 layers of Python and small kernels) is worth a few dozen tokens; on an accelerator
# one padded batch forward is nearly free next to many sequential batch-1 ones.
FORWARD_OVERHEAD_TOKENS = {"cpu": 32}
ACCELERATOR_OVERHEAD_TOKENS = 4096


@dataclass
class Node:
    """Tokens [start, end) shared by every prompt below; `ref` is one such prompt's index."""

    ref: int
    start: int
    end: int
    ends_here: list[int] = field(default_factory=list)  # prompts that are exactly tokens[:end]
    children: list[Node] = field(default_factory=list)


def build_tree(prompts: list[list[int]]) -> Node:
    """Radix tree of the prompts (each must be non-empty)."""

    def build(rows: list[int], start: int) -> Node:
        common = len(os.path.commonprefix([prompts[i][start:] for i in rows]))
        node = Node(rows[0], start, start + common)
        groups: dict[int, list[int]] = {}
        for i in rows:
            if len(prompts[i]) == node.end:
                node.ends_here.append(i)
            else:
                groups.setdefault(prompts[i][node.end], []).append(i)
        node.children = [build(g, node.end) for g in groups.values()]
        return node

    return build(list(range(len(prompts))), 0)


def nodes(root: Node):
    stack = [root]
    while stack:
        node = stack.pop()
        yield node
        stack.extend(node.children)


def plan(prompts: list[list[int]], device: torch.device) -> Node | None:
    """The tree if encoding it costs less than one padded batch forward, else None."""
    overhead = FORWARD_OVERHEAD_TOKENS.get(device.type, ACCELERATOR_OVERHEAD_TOKENS)
    root = build_tree(prompts)
    tree_cost = sum(n.end - n.start + overhead for n in nodes(root) if n.end > n.start)
    padded_cost = len(prompts) * max(map(len, prompts)) + overhead
    return root if tree_cost < padded_cost else None


def tree_prefill(model, prompts: list[list[int]], root: Node):
    """Encode the tree; returns (left-padded batch cache, attention mask, last-token logits per prompt)."""
    n, width = len(prompts), max(map(len, prompts))
    device = next(model.parameters()).device
    walk = DynamicCache()
    batch_kv: list[tuple[torch.Tensor, torch.Tensor]] = []
    logits: list[torch.Tensor | None] = [None] * n

    def visit(node: Node) -> None:
        if node.end > node.start:
            ids = torch.tensor([prompts[node.ref][node.start : node.end]], device=device)
            pos = torch.arange(node.start, node.end, device=device)[None]
            last = model(input_ids=ids, position_ids=pos, past_key_values=walk, use_cache=True,
                         logits_to_keep=1).logits[0, -1]
        if not batch_kv:
            batch_kv.extend((k.new_zeros((n, *k.shape[1:2], width, k.shape[-1])),
                             v.new_zeros((n, *v.shape[1:2], width, v.shape[-1]))) for k, v, _ in walk)
        for i in node.ends_here:
            logits[i] = last
            for (bk, bv), (k, v, _) in zip(batch_kv, walk, strict=True):
                bk[i, :, width - node.end :] = k[0]
                bv[i, :, width - node.end :] = v[0]
        for child in node.children:
            visit(child)
            walk.crop(node.end - walk.get_seq_length())

    visit(root)
    mask = torch.zeros((n, width), dtype=torch.long, device=device)
    for i, p in enumerate(prompts):
        mask[i, width - len(p) :] = 1
    return DynamicCache(ddp_cache_data=batch_kv), mask, torch.stack(logits)
