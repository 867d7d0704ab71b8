"""The decode step's sampler: inverse-CDF draws, top-k/top-p truncation, log-prob and entropy."""

import math

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from juncture.policy.base import SamplingParams
from juncture.policy.sampling import inverse_cdf, new_scratch, sample_step, truncate


def logprobs_and_entropy(logits: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Reference: log-prob of `targets` and entropy of softmax(logits) [..., V], in float32."""
    logp = torch.log_softmax(logits.float(), dim=-1)
    return logp.gather(-1, targets.unsqueeze(-1)).squeeze(-1), -(logp.exp() * logp).sum(-1)


def test_inverse_cdf_hand_worked():
    # cdf = [0.1, 0.1, 0.6, 1.0]: u in [0, .1) -> 0, [.1, .6) -> 2 (index 1 has no weight), [.6, 1) -> 3
    w = torch.tensor([[0.1, 0.0, 0.5, 0.4]])
    g = torch.Generator().manual_seed(0)
    draws = [int(inverse_cdf(w, g)) for _ in range(2000)]
    counts = [draws.count(i) / len(draws) for i in range(4)]
    assert counts[1] == 0.0
    for got, want in zip(counts, [0.1, 0.0, 0.5, 0.4], strict=True):
        assert abs(got - want) < 0.035  # > 3 sd of a binomial proportion at n = 2000


def test_inverse_cdf_never_picks_zero_weight_tail_even_at_u_near_one(monkeypatch):
    w = torch.tensor([[0.3, 0.7, 0.0, 0.0]])
    almost_one = math.nextafter(1.0, 0.0)  # the largest uniform torch.rand can return
    monkeypatch.setattr(torch, "rand", lambda shape, **kw: torch.full(shape, almost_one, dtype=torch.float64))
    assert int(inverse_cdf(w)) == 1


def test_inverse_cdf_across_blocks():
    # three entries in different 256-wide blocks (the last one in a padded block): a third each
    w = torch.zeros(3000, 1000)
    w[:, [5, 300, 999]] = torch.tensor([1.0, 2.0, 1.0])
    idx = inverse_cdf(w, torch.Generator().manual_seed(4))
    assert set(idx.tolist()) == {5, 300, 999}
    for i, want in [(5, 0.25), (300, 0.5), (999, 0.25)]:
        assert abs((idx == i).double().mean().item() - want) < 0.03


@settings(max_examples=40, deadline=None)
@given(st.lists(st.floats(0.0, 10.0), min_size=2, max_size=12), st.integers(0, 2**31 - 1))
def test_inverse_cdf_only_returns_indices_with_weight(weights, seed):
    w = torch.tensor([weights])
    if w.sum() == 0:
        w[0, -1] = 1.0
    idx = inverse_cdf(w.repeat(64, 1), torch.Generator().manual_seed(seed))
    assert (w[0, idx] > 0).all()


def test_sample_step_matches_multinomial_distribution():
    logits = torch.tensor([[2.0, 1.0, 0.0, -1.0]]).repeat(4000, 1)
    tokens, _, _ = sample_step(logits, SamplingParams(temperature=0.7), torch.Generator().manual_seed(1))
    want = torch.softmax(logits[0] / 0.7, -1)
    got = torch.bincount(tokens, minlength=4).double() / len(tokens)
    assert torch.allclose(got, want.double(), atol=0.025)


def test_logprob_and_entropy_are_under_the_untruncated_tempered_distribution():
    logits = torch.randn(5, 30, generator=torch.Generator().manual_seed(2))
    params = SamplingParams(temperature=1.3, top_k=4, top_p=0.8)
    tokens, logp, ent = sample_step(logits, params, torch.Generator().manual_seed(3))
    ref_logp, ref_ent = logprobs_and_entropy(logits / 1.3, tokens)
    assert torch.allclose(logp, ref_logp) and torch.allclose(ent, ref_ent)
    top4 = torch.topk(logits, 4).indices
    assert all(int(t) in top4[i].tolist() for i, t in enumerate(tokens))


def test_truncate_hand_worked():
    p = torch.tensor([[0.05, 0.4, 0.3, 0.25]])
    # top-k 3 keeps .4 .3 .25; top-p .6 then keeps the tokens whose preceding mass is < .6 of .95: .4 and .3
    kept = truncate(p, SamplingParams(top_k=3, top_p=0.6))
    assert torch.equal(kept > 0, torch.tensor([[False, True, True, False]]))
    assert torch.allclose(kept[0, 1:3], p[0, 1:3])


def test_greedy_takes_the_argmax_and_ignores_temperature():
    logits = torch.tensor([[0.0, 3.0, 1.0], [5.0, 0.0, 4.9]])
    tokens, logp, _ = sample_step(logits, SamplingParams(greedy=True, temperature=0.1))
    assert tokens.tolist() == [1, 0]
    assert torch.allclose(logp, torch.log_softmax(logits, -1).gather(-1, tokens[:, None]).squeeze(-1))


@settings(max_examples=30, deadline=None)
@given(st.lists(st.integers(1, 6), min_size=1, max_size=4), st.integers(0, 1000), st.sampled_from([0.5, 1.0, 1.7]))
def test_a_reused_scratch_changes_nothing(batch_sizes, seed, temperature):
    """A decode loop passes one scratch while its batch shrinks: the same tokens, log-probs and entropies as
    fresh buffers, the logits untouched, and nothing returned that the next step overwrites."""
    params = SamplingParams(temperature=temperature, top_k=5 if seed % 2 else 0)
    scratch = new_scratch(max(batch_sizes), 300, torch.device("cpu"))
    previous = None
    for i, n in enumerate(batch_sizes):
        logits = (torch.randn(n, 300, generator=torch.Generator().manual_seed(seed + i)) * 4).to(torch.bfloat16)
        kept = logits.clone()
        got = sample_step(logits, params, torch.Generator().manual_seed(seed), scratch)
        want = sample_step(logits, params, torch.Generator().manual_seed(seed))
        assert torch.equal(logits, kept)
        assert all(torch.equal(a, b) for a, b in zip(got, want, strict=True))
        ref_logp, ref_ent = logprobs_and_entropy(logits.float() / temperature, got[0])
        assert torch.allclose(got[1], ref_logp, atol=1e-5) and torch.allclose(got[2], ref_ent, atol=1e-4)
        if previous is not None:
            assert all(torch.equal(a, b) for a, b in zip(previous[0], previous[1], strict=True))
        previous = (got, tuple(t.clone() for t in got))
