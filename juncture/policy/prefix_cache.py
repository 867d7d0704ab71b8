"""Shared-prefix prefill: encode every distinct token prefix of a batch once.

All rollouts of a group share their prompt, every prompt shares the few-shot header, and
branches share their parent's tokens up to the fork point. A radix tree over the prompts
finds these shared spans; a depth-first walk encodes each span once at batch 1, growing one
KV cache and cropping it back when it returns to a fork, and copies each prompt's KV into a
left-padded batch cache: the layout the plain padded prefill produces.

On a CPU, the prefix common to all prompts is kept once (`SharedPrefix`) rather than copied into
every row when the copies would be large (`PREFIX_APART_MIN_BYTES`): each decode step would
otherwise read it once per row, which at many rows and a few hundred tokens costs as much as the
weights. `shared_prefix_attention` attends to it once for all rows and to each row's own KV, in one
softmax; at a few rows its fixed cost is the larger, and the rows hold the prefix.

Across calls, `KVStore` keeps each finished row's KV: the agent loop calls generate once per
turn with every row's whole history, and branches start from their parent's tokens, so the
next call's prompts mostly extend sequences whose KV the last call already computed.

The walk runs one forward per tree node, so it only pays where the tokens it saves outweigh
the per-forward overhead; `plan` decides with a simple token-count cost model, after folding
nodes not worth their own forward into their children (`fold_small_nodes`).
"""

from __future__ import annotations

from collections import OrderedDict
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from transformers import AttentionInterface, Cache, DynamicCache
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

from juncture.policy.packed import weights_version

# What one extra forward costs, in prompt tokens' worth of compute. On CPU a forward's fixed
# cost (30 layers of Python and small kernels) is worth a few dozen tokens; on an accelerator
# one padded batch forward is nearly free next to many sequential batch-1 ones.
FORWARD_OVERHEAD_TOKENS = {"cpu": 32}
ACCELERATOR_OVERHEAD_TOKENS = 4096
# Keeping the common prefix apart adds a fixed cost to every decode step on a CPU (the prefix path's extra small
# products, a few ms for SmolLM2); copying it into every row instead makes each step read it once per row. Apart
# pays once the copies beyond the first would hold more than this (SmolLM2, bf16 and fp32: the crossover lies
# between 24 and 35 MB; docs/benchmarks.md, "Shared prefix apart or in every row").
PREFIX_APART_MIN_BYTES = 28 << 20
# rows x padded width of one batched leaf forward: bounds the KV it copies (SmolLM2: 46 KB per token in fp32)
LEAF_BATCH_TOKENS = 1 << 15
ATTENTION = "juncture_shared_prefix"


def common_len(a, b) -> int:
    """Length of the common prefix of two token sequences of one type (binary search on slice equality)."""
    lo, hi = 0, min(len(a), len(b))
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if a[:mid] == b[:mid]:
            lo = mid
        else:
            hi = mid - 1
    return lo


KV = list[tuple[torch.Tensor, torch.Tensor]]  # per layer (keys, values), each [1, kv_heads, length, head_dim]
# a node encoded after the walk: (node, where its forward begins, its earlier KV [0, begin) as consecutive segments)
Deferred = tuple["Node", int, list[KV]]


class KVStore:
    """KV of whole sequences from earlier calls, for prompts that extend them; LRU within a byte budget.

    An entry is dropped when a longer one extends it, and all are dropped when the weights
    change (every in-place update, optimizer step or load_state_dict, bumps a parameter's version).
    """

    def __init__(self, max_bytes: int):
        self.max_bytes = max_bytes
        self.entries: OrderedDict[tuple[int, ...], KV] = OrderedDict()
        self.bytes = 0
        self.weights: int | None = None

    def sync(self, model) -> None:
        weights = weights_version(model)
        if weights != self.weights:
            self.clear()
            self.weights = weights

    def clear(self) -> None:
        self.entries.clear()
        self.bytes = 0

    def match(self, tokens: tuple[int, ...]) -> tuple[int, tuple[int, ...] | None]:
        """(length, key) of the entry sharing the longest prefix with `tokens`."""
        best = (0, None)
        for key in self.entries:
            n = common_len(key, tokens)
            if n > best[0]:
                best = (n, key)
        return best

    def get(self, key: tuple[int, ...]) -> KV:
        self.entries.move_to_end(key)
        return self.entries[key]

    def put(self, tokens: tuple[int, ...], kv: KV) -> None:
        size = sum(k.nbytes + v.nbytes for k, v in kv)
        if size > self.max_bytes:
            return
        for key in [k for k in self.entries if len(k) <= len(tokens) and tokens[: len(k)] == k]:
            self._drop(key)
        self.entries[tokens] = kv
        self.bytes += size
        while self.bytes > self.max_bytes:
            self._drop(next(iter(self.entries)))

    def _drop(self, key) -> None:
        self.bytes -= sum(k.nbytes + v.nbytes for k, v in self.entries.pop(key))


@dataclass
class Node:
    """Tokens [start, end) shared by `rows` (prompt indices).

    The KVStore holds [start, stored) under `cached_key`; the prefill takes [start, cached) from it
    (one less than stored where rows end here and all is stored: their last token's logits need a forward).
    """

    rows: list[int]
    start: int
    end: int
    ends_here: list[int] = field(default_factory=list)  # prompts that are exactly tokens[:end]
    children: list[Node] = field(default_factory=list)
    cached: int = 0
    stored: int = 0
    cached_key: tuple[int, ...] | None = None


def build_tree(prompts: list[list[int]]) -> Node:
    """Radix tree of the prompts (each must be non-empty)."""

    def build(rows: list[int], start: int) -> Node:
        seqs = [prompts[i] for i in rows]
        node = Node(rows, start, common_len(min(seqs), max(seqs)))
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


def encode_from(node: Node) -> int:
    """Where the node's forward begins: its tokens before that are the parent's or the store's."""
    return max(node.start, node.cached)


def needs_forward(node: Node) -> bool:
    return node.end > encode_from(node)


def forward_overhead(device: torch.device) -> int:
    return FORWARD_OVERHEAD_TOKENS.get(device.type, ACCELERATOR_OVERHEAD_TOKENS)


def deferred(node: Node, root: Node) -> bool:
    """Whether `node` is encoded after the walk, in padded batches with others: no other node waits on its
    forward (it has no children, or the store holds all its tokens and the forward only gives logits)."""
    return node is not root and needs_forward(node) and (not node.children or node.stored >= node.end)


def walked(node: Node, root: Node) -> bool:
    """Whether `node` runs its own batch-1 forward during the walk (one other nodes may wait on)."""
    return needs_forward(node) and not deferred(node, root)


def leaf_batches(lengths: list[int], overhead: int, known: list[int] | None = None) -> tuple[int, list[list[int]]]:
    """The cheapest split of leaf forwards into padded batches: (cost in tokens, batches of indices).

    Sorted by length, the best batches are runs of neighbours; a batch costs one forward's
    overhead plus its size times its longest member (rows are padded to it). O(n^2) dynamic program.
    With `known` (each leaf's tokens before its new ones), a batch of several leaves also holds at most
    LEAF_BATCH_TOKENS row-tokens: its padded forward copies its rows' earlier KV, which for long
    histories would be far more than one row's (then the best split is sought among runs of neighbours).
    """
    order = sorted(range(len(lengths)), key=lengths.__getitem__)
    best = [0] + [0] * len(order)  # best[j]: cost of the first j leaves in sorted order
    start = [0] * (len(order) + 1)
    for j in range(1, len(order) + 1):
        longest, widest, options = lengths[order[j - 1]], 0, []
        for i in range(j - 1, -1, -1):  # the batch order[i:j], growing
            widest = max(widest, known[order[i]]) if known else 0
            if known and i < j - 1 and (j - i) * (widest + longest) > LEAF_BATCH_TOKENS:
                break  # larger batches only hold more
            options.append((best[i] + overhead + (j - i) * longest, i))
        best[j], start[j] = min(options)
    batches, j = [], len(order)
    while j:
        batches.append(order[start[j] : j])
        j = start[j]
    return best[-1], batches[::-1]


def mark_stored(root: Node, prompts: list[list[int]], store: KVStore | None) -> Node:
    """Mark each node of the tree with the longest span of its tokens the store holds (`stored`, `cached`)."""
    if store is not None and store.entries:
        matches = [store.match(tuple(p)) for p in prompts]
        for node in nodes(root):
            node.stored, node.cached_key = max(((min(matches[i][0], node.end), matches[i][1]) for i in node.rows),
                                               key=lambda m: m[0])
            node.cached = min(node.stored, node.end - 1) if node.ends_here else node.stored
    return root


def fold_small_nodes(root: Node, overhead: int) -> Node:
    """Fold into its children every inner node whose own forward costs more than the tokens it saves them.

    Prompts that share a few tokens past the common header (a question's first word) would otherwise
    cost one batch-1 forward each before their leaves.
    """
    def fold(node: Node) -> None:
        children = []
        for child in node.children:
            fold(child)
            inner = child.children and not child.ends_here and walked(child, root)
            if inner and (len(child.rows) - 1) * (child.end - encode_from(child)) < overhead:
                for grandchild in child.children:
                    grandchild.start = child.start
                children.extend(child.children)
            else:
                children.append(child)
        node.children = children

    fold(root)
    return root


def marked_tree(prompts: list[list[int]], overhead: int, store: KVStore | None = None) -> Node:
    """The prefix tree to encode: marked with what `store` holds, nodes not worth their own forward folded."""
    return fold_small_nodes(mark_stored(build_tree(prompts), prompts, store), overhead)


def plan(prompts: list[list[int]], device: torch.device, store: KVStore | None = None) -> Node | None:
    """The tree (see `marked_tree`) if encoding it costs less than one padded batch forward."""
    overhead = forward_overhead(device)
    root = marked_tree(prompts, overhead, store)
    walk = [n for n in nodes(root) if walked(n, root)]
    leaves = [n for n in nodes(root) if deferred(n, root)]
    tree_cost = sum(n.end - encode_from(n) + overhead for n in walk) + leaf_batches(
        [n.end - encode_from(n) for n in leaves], overhead, [encode_from(n) for n in leaves])[0]
    padded_cost = len(prompts) * max(map(len, prompts)) + overhead
    return root if tree_cost < padded_cost else None


@dataclass
class SharedPrefix:
    """KV of the tokens every row starts with, held once: per layer [1, kv_heads, length, head_dim]."""

    keys: list[torch.Tensor]
    values: list[torch.Tensor]


def tree_prefill(model, prompts: list[list[int]], root: Node, store: KVStore | None = None,
                 cache: Cache | None = None):
    """Encode the tree; returns (row cache, row attention mask, last-token logits, SharedPrefix or None).

    Rows hold their tokens after the shared prefix, left-padded to one width, in `cache` (an
    empty cache to fill; a DynamicCache by default); positions still count from each prompt's start.
    The walk encodes inner nodes at batch 1; nodes nothing waits on (a later turn's new tokens, a
    branch's fork token, see `deferred`) are encoded afterwards in padded batches (see `leaf_batches`).
    """
    n, width = len(prompts), max(map(len, prompts))
    device = next(model.parameters()).device
    # shared_prefix_attention stands in for SDPA only; other attention implementations keep whole rows.
    # On a GPU, decoding is bound by kernel launches, not by reading the prefix once per row, and the
    # extra matmuls of shared_prefix_attention made decode steps slower (docs/benchmarks.md, H100), so
    # only the CPU keeps the prefix apart.
    shared = device.type == "cpu" and model.config._attn_implementation == "sdpa"
    # One row shares nothing (bf16, 512 tokens: 20 vs 16 ms per step apart, docs/benchmarks.md); a few rows
    # share too little to pay for the prefix path (PREFIX_APART_MIN_BYTES).
    copies = (n - 1) * root.end * kv_bytes_per_token(model)
    split = root.end if shared and copies > PREFIX_APART_MIN_BYTES else 0
    walk = DynamicCache()
    batch_kv: list[tuple[torch.Tensor, torch.Tensor]] = []
    logits: list[torch.Tensor | None] = [None] * n
    prefix = SharedPrefix([], [])
    leaves: list[Deferred] = []

    def place(node: Node, kv: KV, last: torch.Tensor) -> None:
        """Rows ending at `node` get its logits and their tokens [split, end) of `kv` (per layer [1, h, end, d])."""
        if not batch_kv:
            batch_kv.extend((k.new_zeros((n, k.shape[1], width - split, k.shape[-1])),
                             v.new_zeros((n, v.shape[1], width - split, v.shape[-1]))) for k, v in kv)
        for i in node.ends_here:
            logits[i] = last
            for (bk, bv), (k, v) in zip(batch_kv, kv, strict=True):
                bk[i, :, width - node.end :] = k[0, :, split:]
                bv[i, :, width - node.end :] = v[0, :, split:]

    def take(node: Node, begin: int, end: int) -> None:
        """Append the node's tokens [begin, end) from the store to the walk."""
        if end > begin:
            for layer, (k, v) in enumerate(store.get(node.cached_key)):
                walk.update(k[:, :, begin:end], v[:, :, begin:end], layer)

    def visit(node: Node) -> None:
        begin = encode_from(node)  # the walk holds [0, start)
        if deferred(node, root):
            # views, not copies: the walk never writes its tensors in place, and the store's entries are kept
            earlier = [[(k, v) for k, v, _ in walk]]
            if begin > node.start:
                earlier.append([(k[:, :, node.start : begin], v[:, :, node.start : begin])
                                for k, v in store.get(node.cached_key)])
            leaves.append((node, begin, earlier))
            take(node, node.start, node.end if node.children else node.start)  # all stored, if there are children
        else:
            take(node, node.start, begin)
            if node.end > begin:
                ids = torch.tensor([prompts[node.rows[0]][begin : node.end]], device=device)
                pos = torch.arange(begin, node.end, device=device)[None]
                last = model(input_ids=ids, position_ids=pos, past_key_values=walk, use_cache=True,
                             logits_to_keep=1).logits[0, -1]
            if node is root and split:
                prefix.keys.extend(k[:, :, :split] for k, _, _ in walk)  # never written in place: safe to share
                prefix.values.extend(v[:, :, :split] for _, v, _ in walk)
            place(node, [(k, v) for k, v, _ in walk], last if node.ends_here else None)
        for child in node.children:
            visit(child)
            walk.crop(node.end - walk.get_seq_length())

    visit(root)
    lengths, known = [leaf.end - begin for leaf, begin, _ in leaves], [begin for _, begin, _ in leaves]
    for batch in leaf_batches(lengths, forward_overhead(device), known)[1]:
        for leaf, kv, last in encode_leaves(model, prompts, [leaves[j] for j in batch]):
            place(leaf, kv, last)
    mask = torch.zeros((n, width - split), dtype=torch.long, device=device)
    for i, p in enumerate(prompts):
        mask[i, width - len(p) :] = 1
    cache = DynamicCache() if cache is None else cache
    for layer, (k, v) in enumerate(batch_kv):
        cache.update(k, v, layer)
    return cache, mask, torch.stack(logits), prefix if split else None


def kv_bytes_per_token(model) -> int:
    """Bytes of keys and values one token adds to the cache of a transformers model's decoder, all layers."""
    config = model.config.get_text_config()  # the model's own config, or its language model's in a multimodal one
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    kv_heads = getattr(config, "num_key_value_heads", None) or config.num_attention_heads
    return 2 * config.num_hidden_layers * kv_heads * head_dim * next(model.parameters()).dtype.itemsize


def encode_leaves(model, prompts: list[list[int]], leaves: list[Deferred]):
    """One padded forward over several leaves' new tokens; yields (leaf, its KV [0, end), last logits).

    Each row is [padding, the leaf's earlier KV, padding, its new tokens]: earlier KV right-aligned
    in a width of the longest, new tokens right-aligned in the last columns, padding masked out.
    """
    device = next(model.parameters()).device
    known = max(begin for _, begin, _ in leaves)
    new = max(leaf.end - begin for leaf, begin, _ in leaves)
    rows = len(leaves)
    ids = torch.zeros((rows, new), dtype=torch.long, device=device)
    pos = torch.zeros((rows, new), dtype=torch.long, device=device)
    mask = torch.zeros((rows, known + new), dtype=torch.long, device=device)
    for r, (leaf, begin, _) in enumerate(leaves):
        count = leaf.end - begin
        ids[r, new - count :] = torch.tensor(prompts[leaf.rows[0]][begin : leaf.end], device=device)
        pos[r, new - count :] = torch.arange(begin, leaf.end, device=device)
        mask[r, known - begin : known] = 1
        mask[r, known + new - count :] = 1
    cache = DynamicCache()
    if known:
        shapes = next(segment for _, _, earlier in leaves for segment in earlier if segment)
        for layer, (k0, v0) in enumerate(shapes):
            keys = k0.new_zeros((rows, k0.shape[1], known, k0.shape[-1]))
            values = v0.new_zeros((rows, v0.shape[1], known, v0.shape[-1]))
            for r, (_, begin, earlier) in enumerate(leaves):
                at = known - begin
                for segment in filter(None, earlier):
                    k, v = segment[layer]
                    keys[r, :, at : at + k.shape[2]] = k[0]
                    values[r, :, at : at + v.shape[2]] = v[0]
                    at += k.shape[2]
            cache.update(keys, values, layer)
    last = model(input_ids=ids, attention_mask=mask, position_ids=pos, past_key_values=cache, use_cache=True,
                 logits_to_keep=1).logits[:, -1]
    for r, (leaf, begin, _) in enumerate(leaves):
        count = leaf.end - begin
        kv = [(torch.cat([k[r : r + 1, :, known - begin : known], k[r : r + 1, :, known + new - count :]], 2),
               torch.cat([v[r : r + 1, :, known - begin : known], v[r : r + 1, :, known + new - count :]], 2))
              for k, v, _ in cache]
        yield leaf, kv, last[r]


def row_kv(cache: Cache, j: int, length: int, prefix: SharedPrefix | None) -> KV:
    """A copy of row j's KV: the shared prefix, if any, then the row's last `length` cached positions."""
    out = []
    for layer, (k, v, _) in enumerate(cache):
        k, v = k[j : j + 1, :, k.shape[2] - length :], v[j : j + 1, :, v.shape[2] - length :]
        if prefix is None:
            out.append((k.clone(), v.clone()))
        else:
            out.append((torch.cat([prefix.keys[layer], k], 2), torch.cat([prefix.values[layer], v], 2)))
    return out


def decode_attention(q: torch.Tensor, key: torch.Tensor, value: torch.Tensor, visible: torch.Tensor | None,
                     prefix: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
    """Attention of one query position per row over the row's own KV and, optionally, a prefix shared by all rows.

    q [b, kv_heads, group, dim] (scaled; the query heads that share a KV head grouped); key/value
    [b, kv_heads, own, dim], views into a preallocated cache are fine; visible [b, 1, 1, own] (bool,
    or an additive float mask) or None; prefix (keys, values) [1, kv_heads, p, dim], read once for all
    rows: the query heads of all rows are stacked as query rows against it. Returns [b, kv_heads, group, dim].
    """
    if prefix is None:  # one fused kernel; the grouped heads act as query positions (no causal mask)
        return F.scaled_dot_product_attention(q, key, value, attn_mask=visible, scale=1.0)
    # key as the left operand needs no copy of a cache view; `q @ key.transpose(-1, -2)` is several times
    # slower in bf16 on CPU
    scores = (key @ q.transpose(-1, -2)).transpose(-1, -2)
    if visible is not None:
        scores = scores.masked_fill(~visible, float("-inf")) if visible.dtype == torch.bool else scores + visible
    kp, vp = prefix
    b, kv_heads, _, dim = q.shape
    p = kp.shape[2]
    stacked = q.transpose(0, 1).reshape(1, kv_heads, -1, dim)  # [1, kv_heads, b * group, dim]
    scores_prefix = (stacked @ kp.transpose(-1, -2)).view(kv_heads, b, -1, p).transpose(0, 1)
    probs = torch.softmax(torch.cat([scores_prefix, scores], dim=-1).float(), dim=-1).to(value.dtype)
    out = probs[..., p:] @ value
    stacked_probs = probs[..., :p].transpose(0, 1).reshape(1, kv_heads, -1, p)
    out += (stacked_probs @ vp).view(kv_heads, b, -1, dim).transpose(0, 1)
    return out


def shared_prefix_attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0,
                            shared_prefix: SharedPrefix | None = None, **kwargs):
    """transformers attention for one decode step over [shared prefix] + [each row's own KV]; SDPA otherwise."""
    if shared_prefix is None or query.shape[2] != 1:
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      **kwargs)
    b, heads, _, dim = query.shape
    kv_heads = key.shape[1]
    q = (query * (scaling or dim**-0.5)).reshape(b, kv_heads, heads // kv_heads, dim)
    layer = module.layer_idx
    out = decode_attention(q, key, value, attention_mask, (shared_prefix.keys[layer], shared_prefix.values[layer]))
    return out.reshape(b, 1, heads, dim), None


AttentionInterface.register(ATTENTION, shared_prefix_attention)
AttentionMaskInterface.register(ATTENTION, sdpa_mask)


@contextmanager
def shared_prefix_decoding(model, prefix: SharedPrefix | None):
    """Route the model's attention through shared_prefix_attention for the block (a no-op without a prefix)."""
    if prefix is None:
        yield
        return
    old = model.config._attn_implementation
    model.set_attn_implementation(ATTENTION)
    if model.config._attn_implementation != ATTENTION:
        raise RuntimeError(f"{type(model).__name__} cannot switch its attention implementation to {ATTENTION}")
    try:
        yield
    finally:
        model.set_attn_implementation(old)
