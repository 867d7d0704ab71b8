"""Shared-prefix prefill: the same tokens, log-probs and entropies as encoding every prompt in full."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from juncture.config import ModelConfig
from juncture.policy import prefix_cache
from juncture.policy.base import SamplingParams
from juncture.policy.hf import HFPolicy
from juncture.train.batching import pack, score
from juncture.tree import Source, Trajectory


@pytest.fixture(scope="module")
def policy(tiny_model_dir):
    return HFPolicy.load(ModelConfig(path=str(tiny_model_dir)))


@pytest.fixture
def always_tree(monkeypatch):
    """Take the tree path even where the cost model would pick the padded one."""
    monkeypatch.setattr(prefix_cache, "plan", lambda prompts, device: prefix_cache.build_tree(prompts))


def rand_tokens(n: int, seed: int) -> list[int]:
    return torch.randint(100, 40000, (n,), generator=torch.Generator().manual_seed(seed)).tolist()


def generate(policy, prompts, budgets, params, seed, reuse):
    policy.prefix_reuse = reuse
    try:
        return policy.generate(prompts, budgets, params, torch.Generator().manual_seed(seed))
    finally:
        policy.prefix_reuse = True


def assert_same_as_plain(policy, prompts, budgets=None, seed=0):
    budgets = budgets or [16] * len(prompts)
    assert prefix_cache.plan(prompts, policy.device) is not None  # the shared path really runs
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


def test_bf16_shared_prefix_decoding_runs(tiny_model_dir):
    pol = HFPolicy.load(ModelConfig(path=str(tiny_model_dir), dtype="bfloat16"))
    prompts = branch_prompts(pol)
    gens = pol.generate(prompts, [10] * len(prompts), SamplingParams(), torch.Generator().manual_seed(0))
    for g in gens:
        assert 0 < len(g.tokens) == len(g.logprobs) <= 10 and all(np.isfinite(g.logprobs + g.entropies))


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
        np.testing.assert_allclose(logp[i, -n:].numpy(), tr.logprobs[tr.prompt_len :], atol=2e-4)
        np.testing.assert_allclose(ent[i, -n:].numpy(), tr.entropies[tr.prompt_len :], atol=2e-4)
