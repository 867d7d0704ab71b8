"""The fused Llama decode step computes transformers' function: same logits within float rounding, same cache."""

from __future__ import annotations

import copy

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_kv_cache import assert_same
from test_policy_prefix import branch_prompts, rand_tokens
from transformers import AutoModelForCausalLM, LlamaConfig

from juncture.config import ModelConfig
from juncture.policy import fused_decode, packed
from juncture.policy.base import SamplingParams
from juncture.policy.fused_decode import FusedDecoder
from juncture.policy.hf import HFPolicy
from juncture.policy.kv_cache import GrowableCache

pytestmark = pytest.mark.usefixtures("prefix_apart")  # these test the shared prefix kept apart


@pytest.fixture(scope="module")
def model(tiny_model_dir):
    return AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()


@pytest.fixture(scope="module")
def policy(tiny_model_dir):
    return HFPolicy.load(ModelConfig(path=str(tiny_model_dir), device="cpu"))


def prefilled(model, prompts: list[list[int]], reserve: int = 8):
    """A left-padded batch cache of `prompts`, its mask and next positions (the HF backend's plain prefill)."""
    n, width = len(prompts), max(map(len, prompts))
    ids = torch.full((n, width), 2)
    mask = torch.zeros((n, width), dtype=torch.long)
    for i, p in enumerate(prompts):
        ids[i, width - len(p):], mask[i, width - len(p):] = torch.tensor(p), 1
    cache = GrowableCache(reserve)
    with torch.no_grad():
        model(input_ids=ids, attention_mask=mask, position_ids=(mask.cumsum(-1) - 1).clamp(min=0),
              past_key_values=cache, use_cache=True, logits_to_keep=1)
    return cache, mask, torch.tensor([len(p) for p in prompts])


def steps(model, prompts, tokens_per_step, fused: FusedDecoder | None, offset: int = 0):
    """Feed each step's tokens [n] through transformers or `fused`; logits of every step and the final cache."""
    cache, mask, pos = prefilled(model, prompts)
    pos = pos + offset
    logits = []
    for tokens in tokens_per_step:
        mask = torch.cat([mask, mask.new_ones((len(prompts), 1))], dim=1)
        with torch.no_grad():
            if fused is None:
                out = model(input_ids=tokens[:, None], attention_mask=mask, position_ids=pos[:, None],
                            past_key_values=cache, use_cache=True).logits[:, -1]
            else:
                out = fused(tokens, pos, mask, cache)
        logits.append(out.float())
        pos = pos + 1
    return torch.stack(logits), cache


def ragged_prompts(seed: int) -> list[list[int]]:
    return [rand_tokens(k, seed + k) for k in (3, 17, 9)]


def test_only_plain_llama_models_are_fused(model):
    assert fused_decode.unsupported(model) is None
    other = LlamaConfig(hidden_act="gelu")
    assert "hidden_act 'gelu'" in fused_decode.unsupported(type("M", (), {"config": other})())
    assert "model_type 'qwen2'" in fused_decode.unsupported(type("M", (), {"config": type(
        "C", (), {"model_type": "qwen2"})()})())
    dynamic = LlamaConfig(rope_parameters={"rope_type": "dynamic", "factor": 2.0, "rope_theta": 1e4})
    assert "rope_type 'dynamic'" in fused_decode.unsupported(type("M", (), {"config": dynamic})())
    wrapper = torch.nn.Module()
    wrapper.config, wrapper.model = model.config, model
    assert "Module (only LlamaForCausalLM is fused)" in fused_decode.unsupported(wrapper)
    with pytest.raises(ValueError, match="cannot run this model: hidden_act"):
        FusedDecoder(type("M", (), {"config": other})())


@pytest.mark.parametrize("reordered", [False, True], ids=["plain", "reordered"])
def test_same_logits_and_cache_as_transformers_fp32(model, reordered):
    if reordered and not packed.AVAILABLE:
        pytest.skip("torch built without oneDNN")
    prompts = ragged_prompts(0)
    tokens = [torch.tensor(rand_tokens(3, 100 + s)) for s in range(5)]
    want, want_cache = steps(model, prompts, tokens, None)
    fused = FusedDecoder(model)
    packing = packed.PackedLinears(model)
    if reordered:
        packing.sync()
    fused.sync(packing.weights if reordered else None)
    got, got_cache = steps(model, prompts, tokens, fused)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)
    for (gk, gv, _), (wk, wv, _) in zip(got_cache, want_cache, strict=True):
        torch.testing.assert_close(gk, wk, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(gv, wv, rtol=1e-5, atol=1e-5)


def test_bf16_error_is_that_of_transformers_bf16(model):
    """In bf16 neither matches fp32 exactly; the fused step must be no further from fp32 than transformers is."""
    prompts = ragged_prompts(1)
    tokens = [torch.tensor(rand_tokens(3, 200 + s)) for s in range(4)]
    reference, _ = steps(model, prompts, tokens, None)
    bf16 = copy.deepcopy(model).to(torch.bfloat16)
    hf, _ = steps(bf16, prompts, tokens, None)
    fused = FusedDecoder(bf16)
    fused.sync()
    got, _ = steps(bf16, prompts, tokens, fused)
    hf_error, fused_error = (hf - reference).abs().mean(), (got - reference).abs().mean()
    assert 0 < fused_error <= 1.5 * hf_error, (fused_error, hf_error)
    assert (got - reference).abs().max() <= 2 * (hf - reference).abs().max()


def test_positions_beyond_the_first_rope_table(model):
    """The cos/sin table grows with the positions it is asked for (it starts at 1024)."""
    prompts = ragged_prompts(2)
    tokens = [torch.tensor(rand_tokens(3, 300 + s)) for s in range(2)]
    fused = FusedDecoder(model)
    fused.sync()
    for offset in (0, 1500):
        want, _ = steps(model, prompts, tokens, None, offset)
        got, _ = steps(model, prompts, tokens, fused, offset)
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)
    assert fused.cos.shape[0] >= 1500 + 17 + 2


def test_weights_are_remade_after_an_update(model):
    model = copy.deepcopy(model)
    fused = FusedDecoder(model)
    prompts, tokens = ragged_prompts(3), [torch.tensor(rand_tokens(3, 400))]
    fused.sync()
    before, _ = steps(model, prompts, tokens, fused)
    with torch.no_grad():
        model.model.layers[0].self_attn.k_proj.weight.mul_(1.5)  # in place, as an optimizer step
    fused.sync()
    want, _ = steps(model, prompts, tokens, None)
    got, _ = steps(model, prompts, tokens, fused)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)
    assert not torch.allclose(before, got, atol=1e-3)


def generate_both(policy, prompts, budgets, params, seed=0):
    outs = {}
    fused = policy.fused_decoder
    for name, decoder in (("fused", fused), ("transformers", None)):
        policy.fused_decoder = decoder
        try:
            outs[name] = policy.generate(prompts, budgets, params, torch.Generator().manual_seed(seed))
        finally:
            policy.fused_decoder = fused
    return outs["fused"], outs["transformers"]


def test_generations_with_a_shared_prefix_and_branches(policy):
    """Whole generations through the backend: a shared prefix kept apart, rows finishing at different steps."""
    assert policy.fused_decoder is not None
    header = rand_tokens(120, 5)
    prompts = [header + rand_tokens(k, 50 + k) for k in (4, 11, 11, 2)]
    assert policy._prefill(prompts)[3] is not None
    for params in (SamplingParams(greedy=True), SamplingParams(temperature=0.8, top_p=0.9)):
        fused, plain = generate_both(policy, prompts, [16, 3, 9, 12], params)
        assert_same(fused, plain)
    assert_same(*generate_both(policy, branch_prompts(policy), [9, 4, 9, 9, 6], SamplingParams(greedy=True)))


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(lengths=st.lists(st.integers(1, 30), min_size=1, max_size=5),
       budgets=st.lists(st.integers(1, 12), min_size=5, max_size=5), header=st.integers(0, 40),
       seed=st.integers(0, 1000))
def test_same_generations_as_transformers(policy, lengths, budgets, header, seed):
    prefix = rand_tokens(header, seed)
    prompts = [prefix + rand_tokens(k, seed + 1 + i) for i, k in enumerate(lengths)]
    prompts = [p if p else rand_tokens(1, seed) for p in prompts]
    assert_same(*generate_both(policy, prompts, budgets[: len(prompts)], SamplingParams(greedy=True)))


def test_config_switch(tiny_model_dir):
    assert HFPolicy.load(ModelConfig(path=str(tiny_model_dir))).fused_decoder is not None
    assert HFPolicy.load(ModelConfig(path=str(tiny_model_dir), fused_decode=False)).fused_decoder is None


@pytest.mark.parametrize("rope", [{"rope_type": "linear", "factor": 2.0}, {
    "rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
    "original_max_position_embeddings": 64}], ids=["linear", "llama3"])
def test_scaled_rope_types(rope):
    """RoPE types with fixed frequencies come from the model's rotary embedding, not from the config."""
    from transformers import LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=300, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, head_dim=8, max_position_embeddings=2048,
                         rope_parameters={"rope_theta": 10000.0, **rope})
    model = LlamaForCausalLM(config).eval()
    assert fused_decode.unsupported(model) is None
    prompts = [[5, 9, 13, 200], [7, 8]]
    tokens = [torch.tensor([11, 12]), torch.tensor([3, 299])]
    fused = FusedDecoder(model)
    fused.sync()
    for offset in (0, 700):  # llama3 scales long wavelengths: positions past its original 64 differ
        want, _ = steps(model, prompts, tokens, None, offset)
        got, _ = steps(model, prompts, tokens, fused, offset)
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)
