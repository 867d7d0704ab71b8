"""The HF backend: sampled log-probs and entropies equal what the trainer recomputes."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from pydantic import ValidationError

from juncture.config import ModelConfig
from juncture.policy.base import SamplingParams
from juncture.policy.hf import HFPolicy, resolve_device
from juncture.policy.loading import ModelNotFoundError, resolve_model
from juncture.train.batching import pack, score
from juncture.tree import Source, Trajectory


@pytest.fixture(scope="module")
def policy(tiny_model_dir):
    return HFPolicy.load(ModelConfig(path=str(tiny_model_dir)))


def prompts(tok):
    return [tok.encode("Hello there"), tok.encode("A much longer prompt with more tokens in it"), tok.encode("x")]


def test_logprobs_and_entropies_match_training_forward(policy):
    tok = policy.tokenizer
    gens = policy.generate(prompts(tok), [12, 7, 12], SamplingParams(), torch.Generator().manual_seed(0))
    rows = []
    for i, (p, g) in enumerate(zip(prompts(tok), gens, strict=True)):
        assert len(g.tokens) == len(g.logprobs) == len(g.entropies)
        tr = Trajectory.from_prompt(p, f"t{i}", "g", "task")
        tr.append(g.tokens, Source.MODEL, g.logprobs, g.entropies)
        rows.append(tr)
    assert len(gens[1].tokens) <= 7
    packed = pack(rows, policy.pad_id)
    with torch.no_grad():
        logp, ent = score(policy.model, packed, 1.0, with_entropy=True)
    for i, tr in enumerate(rows):
        n = tr.response_len
        np.testing.assert_allclose(logp[i, -n:].cpu().numpy(), tr.logprobs[tr.prompt_len :], atol=2e-4)
        np.testing.assert_allclose(ent[i, -n:].cpu().numpy(), tr.entropies[tr.prompt_len :], atol=2e-4)
        assert packed.loss_mask[i, -n:].tolist() == [1.0] * n


def test_seeded_sampling_is_reproducible_and_greedy_is_deterministic(policy):
    p = prompts(policy.tokenizer)
    a = policy.generate(p, [10] * 3, SamplingParams(), torch.Generator().manual_seed(3))
    b = policy.generate(p, [10] * 3, SamplingParams(), torch.Generator().manual_seed(3))
    assert [g.tokens for g in a] == [g.tokens for g in b]
    g1 = policy.generate(p, [10] * 3, SamplingParams(greedy=True))
    g2 = policy.generate(p[:1], [10], SamplingParams(greedy=True))
    assert g1[0].tokens == g2[0].tokens  # batching with padding does not change the result


def test_stop_strings_end_the_row(policy):
    tok = policy.tokenizer
    # any text stops at a stop string equal to the first sampled piece
    first = policy.generate(prompts(tok)[:1], [5], SamplingParams(greedy=True))[0]
    stop = tok.decode(first.tokens[:2])
    if not stop.strip():
        pytest.skip("degenerate random model output")
    out = policy.generate(prompts(tok)[:1], [20], SamplingParams(greedy=True, stop_strings=(stop,)))[0]
    assert out.finish_reason == "stop" and out.stop == stop and len(out.tokens) == 2


def test_bf16_policy_keeps_fp32_master_weights(tiny_model_dir):
    pol = HFPolicy.load(ModelConfig(path=str(tiny_model_dir), dtype="bfloat16"))
    assert next(pol.model.parameters()).dtype == torch.float32
    assert next(pol.gen_model.parameters()).dtype == torch.bfloat16
    with torch.no_grad():
        next(pol.model.parameters()).add_(1.0)
    pol.sync_weights()
    a, b = next(pol.model.parameters()), next(pol.gen_model.parameters())
    assert torch.allclose(a.to(torch.bfloat16).float(), b.float())


def test_missing_model_path_is_a_clear_error(tmp_path):
    with pytest.raises(ModelNotFoundError, match="neither 'default'"):
        resolve_model(str(tmp_path / "nope"))
    with pytest.raises(ModelNotFoundError, match="GGUF file"):
        resolve_model(str(tmp_path / "nope.gguf"))
    with pytest.raises(ModelNotFoundError, match="no config.json"):
        resolve_model(str(tmp_path))


def test_device_auto_is_the_cpu_here_and_an_absent_gpu_is_a_clear_error():
    assert resolve_device("auto") == torch.device("cpu" if not torch.cuda.is_available() else "cuda")
    assert resolve_device("cpu") == torch.device("cpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="model.device='cuda:1'.*0 CUDA device"):
            resolve_device("cuda:1")


def test_model_device_is_validated():
    with pytest.raises(ValidationError, match="device"):
        ModelConfig(device="gpu")


@pytest.mark.parametrize("gpu, vllm_installed, device, want", [
    (True, True, "auto", "vllm"), (True, False, "auto", "hf"), (False, True, "auto", "hf"),
    (True, True, "cpu", "hf"),  # the policy pinned to the CPU: the HF backend even beside a GPU
])
def test_backend_auto_picks_vllm_only_on_a_gpu_where_it_is_installed(monkeypatch, gpu, vllm_installed, device, want):
    import importlib.util

    from juncture.policy import backends

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(torch.cuda, "is_available", lambda: gpu)
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: (object() if vllm_installed else None) if name == "vllm" else real_find_spec(name, *a))
    assert backends.resolve_backend(ModelConfig(device=device)) == want
    assert backends.resolve_backend(ModelConfig(device=device, backend="hf")) == "hf"  # an explicit choice stands
    assert ModelConfig().backend == "auto"
