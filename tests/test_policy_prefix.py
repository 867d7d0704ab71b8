"""Prefix reuse (shared-prefix prefill and decoding, the KV store across calls) changes no output.

Every case compares against `prefix_reuse=False`, which encodes every prompt in full: same
tokens, log-probs and entropies, greedy and seeded sampling.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from juncture.config import ModelConfig
from juncture.policy import prefix_cache
from juncture.policy.base import SamplingParams
from juncture.policy.hf import HFPolicy
from juncture.train.batching import pack, score
from juncture.tree import Source, Trajectory

pytestmark = pytest.mark.usefixtures("prefix_apart")  # these test the shared prefix kept apart


@pytest.fixture(scope="module")
def policy(tiny_model_dir):
    return HFPolicy.load(ModelConfig(path=str(tiny_model_dir), device="cpu"))


@pytest.fixture
def always_tree(monkeypatch):
    """Take the tree path even where the cost model would pick the padded one."""
    monkeypatch.setattr(prefix_cache, "plan", lambda prompts, *_: prefix_cache.build_tree(prompts))


def rand_tokens(n: int, seed: int) -> list[int]:
    return torch.randint(100, 40000, (n,), generator=torch.Generator().manual_seed(seed)).tolist()


def generate(policy, prompts, budgets, params, seed, reuse):
    policy.prefix_reuse = reuse
    try:
        return policy.generate(prompts, budgets, params, torch.Generator().manual_seed(seed))
    finally:
        policy.prefix_reuse = True


def assert_same_as_plain(policy, prompts, budgets=None, seed=0, store=None):
    budgets = budgets or [16] * len(prompts)
    assert prefix_cache.plan(prompts, policy.device, store) is not None  # the shared path really runs
    for params in (SamplingParams(greedy=True), SamplingParams(temperature=0.8)):
        shared = generate(policy, prompts, budgets, params, seed, reuse=True)
        plain = generate(policy, prompts, budgets, params, seed, reuse=False)
        for a, b in zip(shared, plain, strict=True):
            assert a.tokens == b.tokens and a.finish_reason == b.finish_reason
            np.testing.assert_allclose(a.logprobs, b.logprobs, atol=1e-4)
            np.testing.assert_allclose(a.entropies, b.entropies, atol=1e-4)


def branch_prompts(policy) -> list[list[int]]:
    """A parent (prompt + its sampled response) and children cut at different fork points."""
    prompt = rand_tokens(80, 1)
    parent = prompt + policy.generate([prompt], [48], SamplingParams(greedy=True))[0].tokens
    return [parent[: len(prompt) + k] for k in (5, 20, 20, 33)] + [parent]


def test_rows_sharing_a_prompt(policy):
    header = rand_tokens(200, 2)
    groups = [header + rand_tokens(12, 3), header + rand_tokens(7, 4)]
    prompts = [groups[0]] * 3 + [groups[1]] * 3
    shared = policy._prefill(prompts)[3]
    assert shared is not None and shared.keys[0].shape[:3] == (1, 2, 200)  # decoding reads the header once
    assert_same_as_plain(policy, prompts, [16, 9, 16, 4, 16, 12])


def test_a_few_rows_copy_the_prefix_into_each_row(policy, monkeypatch):
    """The prefix is kept apart only when its copies beyond the first row's would take more than
    PREFIX_APART_MIN_BYTES; below that every row holds it, and decoding reads whole rows."""
    assert prefix_cache.kv_bytes_per_token(policy.gen_model) == 2 * 2 * 2 * 16 * 4  # K+V, 2 layers, 2 heads x 16, fp32
    header = rand_tokens(100, 2)
    prompts = [header + rand_tokens(k, 40 + k) for k in (3, 8, 5)]
    copies = 2 * 100 * 512  # two rows beyond the first, 100 tokens each
    monkeypatch.setattr(prefix_cache, "PREFIX_APART_MIN_BYTES", copies)
    cache, mask, _, prefix = policy._prefill(prompts)
    assert prefix is None and mask.shape == (3, 108) and cache.get_seq_length() == 108
    assert_same_as_plain(policy, prompts)
    monkeypatch.setattr(prefix_cache, "PREFIX_APART_MIN_BYTES", copies - 1)
    cache, mask, _, prefix = policy._prefill(prompts)
    assert prefix.keys[0].shape[2] == 100 and mask.shape == (3, 8)


def test_rows_of_different_lengths_sharing_a_long_prefix(policy):
    base = rand_tokens(300, 5)
    assert_same_as_plain(policy, [base + rand_tokens(k, 10 + k) for k in (1, 5, 40)] + [base])


def test_branches_forked_from_one_parent(policy):
    assert_same_as_plain(policy, branch_prompts(policy))


def test_rows_without_a_common_prefix(policy, always_tree):
    prompts = [[101 + i] + rand_tokens(10 * i + 3, 20 + i) for i in range(4)]
    assert_same_as_plain(policy, prompts)


def test_batch_of_one(policy, always_tree):
    assert_same_as_plain(policy, [rand_tokens(50, 6)])


def test_one_row_from_stored_kv_keeps_no_shared_prefix(policy):
    """A lone branch continuing its stored parent takes the tree path but decodes its rows whole."""
    fresh_store(policy)
    parent = branch_prompts(policy)[-1]  # generating it stored its KV
    assert cached_tokens(policy, [parent]) == len(parent) - 1
    cache, mask, _, prefix = policy._prefill([parent], policy.kv_store)
    assert prefix is None and mask.shape == (1, len(parent)) and cache.get_seq_length() == len(parent)
    assert_same_as_plain(policy, [parent], store=policy.kv_store)


def test_bf16_shared_prefix_decoding_runs(tiny_model_dir):
    pol = HFPolicy.load(ModelConfig(path=str(tiny_model_dir), dtype="bfloat16", device="cpu"))
    prompts = branch_prompts(pol)
    gens = pol.generate(prompts, [10] * len(prompts), SamplingParams(), torch.Generator().manual_seed(0))
    for g in gens:
        assert 0 < len(g.tokens) == len(g.logprobs) <= 10 and all(np.isfinite(g.logprobs + g.entropies))


def test_other_attention_implementations_keep_whole_rows(tiny_model_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, attn_implementation="eager")
    pol = HFPolicy(model, AutoTokenizer.from_pretrained(tiny_model_dir))
    prompts = branch_prompts(pol)
    assert pol._prefill(prompts)[3] is None
    assert_same_as_plain(pol, prompts)


def set_partitions(items):
    if not items:
        yield []
        return
    first, rest = items[0], items[1:]
    for part in set_partitions(rest):
        yield [[first], *part]
        for i in range(len(part)):
            yield [*part[:i], [first, *part[i]], *part[i + 1 :]]


def test_leaf_batches_hand_worked():
    # together 32 + 3 * 40 = 152; {1, 5} + {40}: (32 + 2 * 5) + (32 + 40) = 114; one each: 96 + 46 = 142
    assert prefix_cache.leaf_batches([40, 1, 5], 32) == (114, [[1, 2], [0]])
    assert prefix_cache.leaf_batches([], 32) == (0, [])


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(1, 60), min_size=1, max_size=6), st.integers(0, 80))
def test_leaf_batches_is_the_cheapest_partition(lengths, overhead):
    cost, batches = prefix_cache.leaf_batches(lengths, overhead)
    assert sorted(j for b in batches for j in b) == list(range(len(lengths)))
    assert cost == sum(overhead + len(b) * max(lengths[j] for j in b) for b in batches)
    brute = min(sum(overhead + len(b) * max(lengths[j] for j in b) for b in part)
                for part in set_partitions(list(range(len(lengths)))))
    assert cost == brute


def test_leaves_of_different_lengths_share_one_padded_forward(policy, monkeypatch):
    """Next-turn rows with histories and new tokens of different lengths, encoded in one forward."""
    fresh_store(policy)
    header = rand_tokens(100, 30)
    prompts = [header + rand_tokens(5 + 3 * i, 31 + i) for i in range(4)]
    first = policy.generate(prompts, [3, 9, 12, 15], SamplingParams(), torch.Generator().manual_seed(1))
    turn2 = [p + g.tokens + rand_tokens(k, 40 + k) for p, g, k in zip(prompts, first, (1, 4, 9, 17), strict=True)]
    monkeypatch.setitem(prefix_cache.FORWARD_OVERHEAD_TOKENS, "cpu", 200)  # the four leaves cost least together
    batches = spy_on_leaf_batches(monkeypatch)
    assert_same_as_plain(policy, turn2, [8, 8, 8, 8])
    batch = batches[0]  # the first call; the second finds the first one's KV in the store
    assert len(batches[1]) == 4 and {c for _, c in batches[1]} == {1}
    assert len(batch) == 4 and len({b for b, _ in batch}) == 4 and sorted(c for _, c in batch) == [2, 5, 10, 18]


def test_leaf_batches_stay_within_the_kv_budget(policy, monkeypatch):
    """Long histories: the batched forward is split so rows x padded width stays within LEAF_BATCH_TOKENS."""
    fresh_store(policy)
    header = rand_tokens(120, 49)
    prompts = [header + rand_tokens(5 + 10 * i, 50 + i) for i in range(4)]
    first = policy.generate(prompts, [4] * 4, SamplingParams(greedy=True))
    turn2 = [p + g.tokens + rand_tokens(3, 60 + i) for i, (p, g) in enumerate(zip(prompts, first, strict=True))]
    monkeypatch.setattr(prefix_cache, "LEAF_BATCH_TOKENS", 400)
    monkeypatch.setitem(prefix_cache.FORWARD_OVERHEAD_TOKENS, "cpu", 100)  # batching pays, within the budget
    batches = spy_on_leaf_batches(monkeypatch)
    assert_same_as_plain(policy, turn2, [6] * 4)
    first_call = [b for b in batches if b[0][1] == 4]  # the 3 new tokens and the last sampled one
    assert len(first_call) == 2 and sorted(map(len, first_call)) == [2, 2]
    for batch in first_call:
        assert len(batch) * (max(b for b, _ in batch) + max(c for _, c in batch)) <= 400


def test_cost_model_skips_the_tree_when_nothing_is_shared(policy):
    cpu = torch.device("cpu")
    assert prefix_cache.plan([[101 + i] + rand_tokens(60, i) for i in range(4)], cpu) is None
    assert prefix_cache.plan([rand_tokens(200, 0)] * 4, cpu) is not None


def test_tree_shares_every_common_span():
    a, b, c = [1, 2, 3, 4], [1, 2, 3, 9, 9], [1, 2]
    root = prefix_cache.build_tree([a, b, a, c])
    assert (root.start, root.end, root.ends_here) == (0, 2, [3])
    (mid,) = root.children
    assert (mid.start, mid.end, mid.ends_here) == (2, 3, [])
    spans = sorted((n.start, n.end, n.ends_here) for n in mid.children)
    assert spans == [(3, 4, [0, 2]), (3, 5, [1])]


def test_nodes_worth_less_than_a_forward_fold_into_their_children():
    a, b, c = [1, 2, 3, 5, 10, 11], [1, 2, 3, 5, 12], [1, 2, 3, 6, 6, 6, 6]
    # rows a and b share one token past the header: encoding it once saves (2 - 1) x 1 token
    kept = prefix_cache.fold_small_nodes(prefix_cache.build_tree([a, b, c]), overhead=1)
    assert [(n.start, n.end) for n in kept.children] == [(3, 4), (3, 7)]
    folded = prefix_cache.fold_small_nodes(prefix_cache.build_tree([a, b, c]), overhead=2)
    assert [(n.start, n.end, n.rows) for n in folded.children] == [(3, 6, [0]), (3, 5, [1]), (3, 7, [2])]
    # a prompt ending at the node needs its logits from the node's own forward: never folded
    ends = prefix_cache.fold_small_nodes(prefix_cache.build_tree([a, b, c, a[:4]]), overhead=100)
    assert [(n.start, n.end, n.ends_here) for n in ends.children] == [(3, 4, [3]), (3, 7, [2])]


def fresh_store(policy) -> prefix_cache.KVStore:
    policy.kv_store = prefix_cache.KVStore(1 << 30)
    return policy.kv_store


def cached_tokens(policy, prompts) -> int:
    tree = prefix_cache.plan(prompts, policy.device, policy.kv_store)
    return max(n.cached for n in prefix_cache.nodes(tree))


def test_next_turn_reuses_the_kv_of_the_last_call(policy):
    """Turn 2 prompts = turn 1 prompt + response + tool result: only the tool result is encoded."""
    store = fresh_store(policy)
    header = rand_tokens(120, 7)
    prompts = [header + rand_tokens(10, 8)] * 2 + [header + rand_tokens(6, 9)] * 2
    first = policy.generate(prompts, [12, 8, 12, 3], SamplingParams(), torch.Generator().manual_seed(0))
    assert len(store.entries) == 4
    turn2 = [p + g.tokens + rand_tokens(9, 20 + i) for i, (p, g) in enumerate(zip(prompts, first, strict=True))]
    assert cached_tokens(policy, turn2) == max(len(p) + len(g.tokens) - 1 for p, g in zip(prompts, first, strict=True))
    assert_same_as_plain(policy, turn2, [10, 6, 10, 10])
    assert all(len(k) >= 130 for k in store.entries)  # turn-2 entries superseded the turn-1 ones they extend


def test_branches_reuse_their_parent_from_the_last_call(policy, monkeypatch):
    fresh_store(policy)
    prompts = branch_prompts(policy)  # generating the parent stored its KV
    assert cached_tokens(policy, prompts) == len(prompts[-1]) - 1
    batches = spy_on_leaf_batches(monkeypatch)
    assert_same_as_plain(policy, prompts)
    # the forks after the first (the root) and the parent: each one token for its logits, one forward for all
    assert batches[0] == [(len(prompts[i]) - 1, 1) for i in (1, 3, 4)]


def spy_on_leaf_batches(monkeypatch) -> list[list[tuple[int, int]]]:
    """Record (begin, tokens) of each node in each batch `encode_leaves` runs, sorted by begin."""
    batches = []
    encode = prefix_cache.encode_leaves

    def spy(model, prompts, leaves):
        batches.append(sorted((begin, leaf.end - begin) for leaf, begin, _ in leaves))
        yield from encode(model, prompts, leaves)

    monkeypatch.setattr(prefix_cache, "encode_leaves", spy)
    return batches


def test_store_is_dropped_when_the_weights_change(policy):
    store = fresh_store(policy)
    policy.generate([rand_tokens(30, 11)], [4], SamplingParams(greedy=True))
    store.sync(policy.gen_model)
    assert store.entries
    with torch.no_grad():
        next(policy.gen_model.parameters()).add_(0.0)  # any in-place update, e.g. an optimizer step
    store.sync(policy.gen_model)
    assert not store.entries and store.bytes == 0


def test_store_keeps_the_longest_sequences_within_its_budget():
    def kv(n):
        return [(torch.zeros(1, 1, n, 2), torch.zeros(1, 1, n, 2))]  # 16 bytes per token

    store = prefix_cache.KVStore(max_bytes=16 * 10)
    store.put((1, 2, 3), kv(3))
    store.put((1, 2, 3, 4), kv(4))  # extends (1, 2, 3): replaces it
    store.put((7, 8), kv(2))
    assert list(store.entries) == [(1, 2, 3, 4), (7, 8)] and store.bytes == 16 * 6
    assert store.match((1, 2, 9)) == (2, (1, 2, 3, 4))
    store.put((5, 6, 7, 8, 9), kv(5))  # over budget: the least recently used goes
    assert list(store.entries) == [(7, 8), (5, 6, 7, 8, 9)]
    store.put(tuple(range(11)), kv(11))  # larger than the whole budget: not kept
    assert list(store.entries) == [(7, 8), (5, 6, 7, 8, 9)]


def test_shared_prefill_logprobs_match_training_forward(policy):
    prompts = branch_prompts(policy)
    budgets = [12, 7, 12, 12, 9]
    gens = policy.generate(prompts, budgets, SamplingParams(), torch.Generator().manual_seed(0))
    rows = []
    for i, (p, g) in enumerate(zip(prompts, gens, strict=True)):
        assert len(g.tokens) == len(g.logprobs) == len(g.entropies) and len(g.tokens) <= budgets[i]
        tr = Trajectory.from_prompt(p, f"t{i}", "g", "task")
        tr.append(g.tokens, Source.MODEL, g.logprobs, g.entropies)
        rows.append(tr)
    packed = pack(rows, policy.pad_id)
    with torch.no_grad():
        logp, ent = score(policy.model, packed, 1.0, with_entropy=True)
    for i, tr in enumerate(rows):
        n = tr.response_len
        np.testing.assert_allclose(logp[i, -n:].cpu().numpy(), tr.logprobs[tr.prompt_len :], atol=2e-4)
        np.testing.assert_allclose(ent[i, -n:].cpu().numpy(), tr.entropies[tr.prompt_len :], atol=2e-4)


@settings(max_examples=40, deadline=None)
@given(st.data())
def test_any_tree_and_store_state_prefills_like_the_padded_batch(policy, data):
    """Random prompts (shared headers, duplicates, forks of a stored parent, extensions of it, unrelated
    rows) after an earlier call filled the store: the tree path, forced (small nodes folded or not), samples what
    the padded prefill does."""
    fresh_store(policy)
    draw = data.draw
    header = rand_tokens(draw(st.integers(0, 30)), draw(st.integers(0, 99)))
    parents = [header + rand_tokens(draw(st.integers(1, 12)), 100 + i) for i in range(draw(st.integers(1, 3)))]
    first = policy.generate(parents, [draw(st.integers(1, 8)) for _ in parents], SamplingParams(greedy=True))
    histories = [p + g.tokens for p, g in zip(parents, first, strict=True)]
    prompts = []
    for _ in range(draw(st.integers(1, 6))):
        h = draw(st.sampled_from(histories))
        kind = draw(st.sampled_from(["fork", "extend", "same", "other"]))
        if kind == "fork":
            prompts.append(h[: draw(st.integers(1, len(h)))])
        elif kind == "extend":
            prompts.append(h + rand_tokens(draw(st.integers(1, 9)), draw(st.integers(200, 299))))
        elif kind == "same" and prompts:
            prompts.append(list(prompts[-1]))
        else:
            prompts.append(rand_tokens(draw(st.integers(1, 20)), draw(st.integers(300, 399))))
    budgets = [4] * len(prompts)
    overhead = draw(st.sampled_from([0, 8, 40]))  # 0: no node folded into its children
    with pytest.MonkeyPatch.context() as mp:  # the tree whatever the cost model says
        mp.setattr(prefix_cache, "plan", lambda p, _, store=None: prefix_cache.marked_tree(p, overhead, store))
        shared = policy.generate(prompts, budgets, SamplingParams(greedy=True))
    plain = generate(policy, prompts, budgets, SamplingParams(greedy=True), 0, reuse=False)
    for a, b in zip(shared, plain, strict=True):
        assert a.tokens == b.tokens
        np.testing.assert_allclose(a.logprobs, b.logprobs, atol=1e-4)
        np.testing.assert_allclose(a.entropies, b.entropies, atol=1e-4)
