"""GrowableCache: decode steps write into preallocated room, and no output changes.

Unit cases drive it and transformers' DynamicCache through the same operations; the policy
cases compare whole generations with `preallocate_kv=False` (DynamicCache): same tokens,
log-probs and entropies, greedy and seeded sampling, on every prefill path.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from test_policy_prefix import branch_prompts, rand_tokens
from transformers import DynamicCache

from juncture.config import ModelConfig
from juncture.policy import prefix_cache
from juncture.policy.base import SamplingParams
from juncture.policy.hf import HFPolicy
from juncture.policy.kv_cache import GrowableCache

pytestmark = pytest.mark.usefixtures("prefix_apart")  # these test the shared prefix kept apart


def kv(batch: int, length: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, 2, length, 4, generator=g), torch.randn(batch, 2, length, 4, generator=g)


def test_steps_write_in_place_until_the_room_runs_out():
    cache = GrowableCache(reserve=3)
    cache.update(*kv(2, 5, 0), 0)
    layer = cache.layers[0]
    assert layer.key_buffer.shape == (2, 2, 8, 4) and cache.get_seq_length() == 5
    ptr = layer.key_buffer.data_ptr()
    for step in range(3):
        new_keys, new_values = kv(2, 1, step + 1)
        keys, values = cache.update(new_keys, new_values, 0)
        assert keys.shape == values.shape == (2, 2, 6 + step, 4)
        assert torch.equal(keys[:, :, -1:], new_keys) and torch.equal(values[:, :, -1:], new_values)
        assert keys.data_ptr() == layer.key_buffer.data_ptr() == ptr  # a view of the same buffer: no reallocation
    cache.update(*kv(2, 1, 9), 0)  # position 9 does not fit in 8: doubles to 16
    assert layer.key_buffer.shape[2] == 16 and layer.key_buffer.data_ptr() != ptr


OPS = st.lists(st.one_of(
    st.tuples(st.just("update"), st.integers(1, 6)),
    st.tuples(st.just("crop"), st.integers(1, 4)),
    st.tuples(st.just("select"), st.integers(0, 2**6 - 1)),
    st.tuples(st.just("reorder"), st.integers(0, 1000)),
), max_size=12)


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 8), st.integers(1, 5), OPS)
def test_same_contents_as_dynamic_cache(reserve, batch, ops):
    """Any sequence of updates, crops, row selections and reorders leaves both caches holding the same KV."""
    ours, ref = GrowableCache(reserve), DynamicCache()
    for seed, (op, arg) in enumerate([("update", 3), *ops]):
        if op == "update":
            for layer in (0, 1):
                k, v = kv(batch, arg, 2 * seed + layer)
                got, want = ours.update(k, v, layer), ref.update(k, v, layer)
                assert all(torch.equal(a, b) for a, b in zip(got, want, strict=True))
        elif op == "crop" and arg < ref.get_seq_length():
            ours.crop(-arg)
            ref.crop(-arg)
        elif op == "select":
            keep = torch.tensor([i for i in range(batch) if arg >> i & 1] or [0])
            batch = len(keep)
            ours.batch_select_indices(keep)
            ref.batch_select_indices(keep)
        elif op == "reorder":  # replaces the keys with a new tensor of the same shape: the buffer must follow
            order = torch.randperm(batch, generator=torch.Generator().manual_seed(arg))
            ours.reorder_cache(order)
            ref.reorder_cache(order)
        assert ours.get_seq_length() == ref.get_seq_length()
        for (k1, v1, _), (k2, v2, _) in zip(ours, ref, strict=True):
            assert torch.equal(k1, k2) and torch.equal(v1, v2)


# --- whole generations: GrowableCache vs DynamicCache ---


@pytest.fixture(scope="module")
def policy(tiny_model_dir):
    return HFPolicy.load(ModelConfig(path=str(tiny_model_dir), device="cpu"))


def generate(policy, prompts, budgets, params, preallocate, reuse=True, seed=0):
    policy.preallocate_kv, policy.prefix_reuse = preallocate, reuse
    try:
        return policy.generate(prompts, budgets, params, torch.Generator().manual_seed(seed))
    finally:
        policy.preallocate_kv, policy.prefix_reuse = True, True


def assert_same(a_gens, b_gens):
    for a, b in zip(a_gens, b_gens, strict=True):
        assert a.tokens == b.tokens and a.finish_reason == b.finish_reason
        np.testing.assert_allclose(a.logprobs, b.logprobs, atol=1e-5)
        np.testing.assert_allclose(a.entropies, b.entropies, atol=1e-5)


def assert_same_as_dynamic(policy, prompts, budgets, reuse=True):
    for params in (SamplingParams(greedy=True), SamplingParams(temperature=0.8, top_p=0.9)):
        new = generate(policy, prompts, budgets, params, True, reuse)
        old = generate(policy, prompts, budgets, params, False, reuse)
        assert_same(new, old)
        assert len({len(g.tokens) for g in new}) > 1  # rows finish at different steps


def test_ragged_prompts_padded_prefill(policy):
    prompts = [rand_tokens(k, k) for k in (3, 17, 40, 9)]
    assert_same_as_dynamic(policy, prompts, [20, 5, 12, 1], reuse=False)


def test_shared_prefix_prefill_and_decoding(policy):
    header = rand_tokens(120, 2)
    prompts = [header + rand_tokens(k, 30 + k) for k in (4, 11, 11, 2)]
    assert policy._prefill(prompts)[3] is not None  # decoding attends to the shared prefix apart
    assert_same_as_dynamic(policy, prompts, [16, 3, 9, 12])


def test_next_turn_and_branches_from_stored_kv(policy):
    """Turn 2 and branches start from KV the store kept from a call decoded with the same cache type."""
    header = rand_tokens(100, 7)
    prompts = [header + rand_tokens(8, 8), header + rand_tokens(5, 9)]
    outs = {}
    for preallocate in (True, False):
        policy.kv_store = prefix_cache.KVStore(1 << 30)
        first = generate(policy, prompts, [10, 6], SamplingParams(), preallocate)
        turn2 = [p + g.tokens + rand_tokens(6, 20 + i) for i, (p, g) in enumerate(zip(prompts, first, strict=True))]
        second = generate(policy, turn2, [8, 12], SamplingParams(), preallocate, seed=1)
        branches = branch_prompts(policy)  # generating the parent left its KV in the store
        third = generate(policy, branches, [9, 4, 9, 9, 6], SamplingParams(), preallocate, seed=2)
        outs[preallocate] = first + second + third
    assert_same(outs[True], outs[False])


class _RecordingDecoder:
    """Stands in for the fused decoder: runs it, then calls `record(cache)`."""

    def __init__(self, inner, record):
        self.inner, self.record = inner, record

    def sync(self, *args):
        self.inner.sync(*args)

    def __call__(self, tokens, positions, mask, cache, prefix):
        logits = self.inner(tokens, positions, mask, cache, prefix)
        self.record(cache)
        return logits


@pytest.mark.parametrize("fused", [True, False], ids=["fused-decode", "transformers-decode"])
def test_decode_steps_do_not_reallocate(policy, fused):
    """The key buffer moves only when rows finish (the cache drops them), never on a plain step."""
    buffers = []

    def record(cache):
        buffers.append((cache.get_seq_length(), cache.layers[0].key_buffer.data_ptr()))

    fused_decoder, eos = policy.fused_decoder, policy.eos_ids
    assert fused_decoder is not None  # the tiny test model is a Llama
    handle = None
    if fused:
        policy.fused_decoder = _RecordingDecoder(fused_decoder, record)
    else:
        policy.fused_decoder = None
        handle = policy.gen_model.register_forward_hook(lambda m, a, kw, out: record(kw["past_key_values"]),
                                                        with_kwargs=True)
    policy.eos_ids = set()  # rows run their whole budget
    try:
        prompts = [rand_tokens(k, k) for k in (5, 12, 8)]
        generate(policy, prompts, [10, 10, 10], SamplingParams(), True, reuse=False)
        if not fused:
            buffers.pop(0)  # the prefill's forward
        assert len(buffers) == 9 and len({ptr for _, ptr in buffers}) == 1
        assert [n for n, _ in buffers] == list(range(13, 22))
        buffers.clear()
        generate(policy, prompts, [10, 4, 10], SamplingParams(), True, reuse=False)
        if not fused:
            buffers.pop(0)
        before, after = {ptr for _, ptr in buffers[:3]}, {ptr for _, ptr in buffers[3:]}
        assert len(buffers) == 9 and len(before) == len(after) == 1 and before != after
    finally:
        if handle is not None:
            handle.remove()
        policy.fused_decoder, policy.eos_ids = fused_decoder, eos
