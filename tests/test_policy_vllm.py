"""The optional vLLM backend (skipped where vllm is not importable, as in the default install)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

pytest.importorskip("vllm")

from juncture.config import ModelConfig, VLLMConfig  # noqa: E402
from juncture.policy.backends import load_policy  # noqa: E402
from juncture.policy.base import SamplingParams  # noqa: E402
from juncture.policy.hf import HFPolicy  # noqa: E402
from juncture.policy.vllm_scores import ScoreRecorder  # noqa: E402
from juncture.train.batching import pack, score  # noqa: E402
from juncture.tree import Source, Trajectory  # noqa: E402


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, tokenizer):
    """A tiny random Llama whose head size (32) vLLM's CPU attention supports."""
    from transformers import LlamaConfig, LlamaForCausalLM

    target = tmp_path_factory.mktemp("tiny-vllm")
    cfg = LlamaConfig(vocab_size=49152, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=2, num_key_value_heads=1, head_dim=32, max_position_embeddings=1024,
                      tie_word_embeddings=True, bos_token_id=1, eos_token_id=2, pad_token_id=2)
    torch.manual_seed(0)
    LlamaForCausalLM(cfg).save_pretrained(target)
    tokenizer.save_pretrained(target)
    return target


VLLM = VLLMConfig(max_model_len=512, enforce_eager=True, cpu_kv_cache_gb=1, gpu_memory_utilization=0.2,
                  scores="engine")


@pytest.fixture(scope="module")
def policy(model_dir):
    """Built for engine scores (its logits processor installed), rescoring unless a test switches."""
    pol = load_policy(ModelConfig(path=str(model_dir), backend="vllm", vllm=VLLM), log=lambda *_: None)
    pol.scores = "rescore"
    return pol


def prompts(tok):
    long = " ".join(f"item {i}," for i in range(50))  # > one KV block (128 tokens on a CPU, 16 on a GPU)
    return [tok.encode("Hello there " + long), tok.encode("A much longer prompt with more tokens " + long),
            tok.encode("x")]


def test_generations_carry_the_trainers_logprobs_and_entropies(policy):
    tok = policy.tokenizer
    gens = policy.generate(prompts(tok), [12, 7, 12], SamplingParams(temperature=1.3),
                           torch.Generator().manual_seed(0))
    rows = []
    for i, (p, g) in enumerate(zip(prompts(tok), gens, strict=True)):
        assert len(g.tokens) == len(g.logprobs) == len(g.entropies) >= 1
        assert g.finish_reason in ("eos", "length") and len(g.tokens) <= [12, 7, 12][i]
        t = Trajectory.from_prompt(p, f"t{i}", "g", "task")
        t.append(g.tokens, Source.MODEL, g.logprobs, g.entropies)
        rows.append(t)
    assert len(gens[0].tokens) == 12 or gens[0].finish_reason == "eos"
    packed = pack(rows, policy.pad_id)
    with torch.no_grad():
        logp, ent = score(policy.model, packed, 1.3, with_entropy=True)
    for i, t in enumerate(rows):
        n = t.response_len
        np.testing.assert_allclose(logp[i, -n:].cpu().numpy(), t.logprobs[t.prompt_len :], atol=2e-4)
        np.testing.assert_allclose(ent[i, -n:].cpu().numpy(), t.entropies[t.prompt_len :], atol=2e-4)
        assert all(0 < e <= np.log(49152) + 1e-3 for e in t.entropies[t.prompt_len :])
    again = policy.generate(prompts(tok), [12, 7, 12], SamplingParams(temperature=1.3), torch.Generator().manual_seed(0))
    assert [g.tokens for g in again] == [g.tokens for g in gens]  # seeded from the torch generator


@pytest.mark.parametrize("scores", ["rescore", "engine"])
def test_stop_strings_end_the_row(policy, scores):
    tok = policy.tokenizer
    first = policy.generate(prompts(tok)[:1], [6], SamplingParams(greedy=True))[0]
    stop = tok.decode(first.tokens[2:4])
    policy.scores = scores
    try:
        out = policy.generate(prompts(tok)[:1], [6], SamplingParams(greedy=True, stop_strings=(stop,)))[0]
    finally:
        policy.scores = "rescore"
    assert out.finish_reason == "stop" and out.stop == stop
    assert stop in tok.decode(out.tokens) and len(out.tokens) <= 4
    assert len(out.logprobs) == len(out.entropies) == len(out.tokens)
    np.testing.assert_allclose(out.logprobs, first.logprobs[: len(out.tokens)], atol=2e-3)


@pytest.mark.parametrize("algorithm, trained_rows", [
    (["algorithm.branching=none", "algorithm.credit=grpo", "algorithm.n_initial=null"], 8),
    (["algorithm.branching=appo", "algorithm.credit=appo", "algorithm.n_initial=2"], 4),  # branch rows untrained
], ids=["grpo", "appo"])
def test_trainer_steps_on_the_vllm_backend(policy, model_dir, tmp_path, algorithm, trained_rows):
    """Two steps through the agent loop: vLLM samples (APPO: its branches too, from their parents' prefixes),
    the update syncs it, the next step samples again. On a GPU `model.backend=auto` picks this backend."""
    from juncture.config import load_config
    from juncture.tasks import build_tasks
    from juncture.train.rl import Trainer

    cfg = load_config(None, [
        f"run_dir={tmp_path}", f"model.path={model_dir}", "model.dtype=float32", "model.backend=vllm",
        "model.vllm.enforce_eager=true", "task.name=toy:even_tokens", "task.train_size=8", "task.eval_size=1",
        "agent.tools=[]", "agent.prompt=plain", "agent.max_new_tokens=12", "agent.max_turn_tokens=12",
        "algorithm.group_size=4", "train.prompts_per_step=2", "optim.lr=1e-3", "logging.progress=false", *algorithm,
    ])
    train_tasks, _ = build_tasks(cfg.task)
    trainer = Trainer(cfg, policy, {}, train_tasks, tmp_path)
    for step in range(2):
        m = trainer.train_step(step)
        assert m["rollout/new_tokens"] > 0 and m["train/rows"] == trained_rows
        assert m.get("rollout/new_tokens_branch", 0) > 0 or trained_rows == 8
        # the rollout log-probs (vLLM's tokens, rescored) are the ones the trainer recomputes
        assert m["train/rollout_logp_abs_diff"] < 1e-4


def test_weight_sync_reaches_the_engine(policy):
    """The random tiny model copies its last token (tied embeddings: E_x.E_x is the largest logit).
    Flip and sharpen the final norm (logits x -30: another token, no near-ties), sync, and vLLM's
    greedy continuation becomes the HF model's; before the sync it keeps the old weights."""
    tok = policy.tokenizer
    greedy = SamplingParams(greedy=True)
    ps = prompts(tok)[:2]
    before = [g.tokens for g in policy.generate(ps, [10, 10], greedy)]
    with torch.no_grad():
        policy.model.model.norm.weight.mul_(-30)
    try:
        hf = [g.tokens for g in HFPolicy.generate(policy, ps, [10, 10], greedy)]
        assert before[0][0] == ps[0][-1] and hf[0][0] != before[0][0]
        assert [g.tokens for g in policy.generate(ps, [10, 10], greedy)] == before  # engine not synced yet
        assert cached_tokens(policy, ps[0]) >= 128  # the prompt's first KV block is in the prefix cache
        policy.sync_weights()
        assert cached_tokens(policy, ps[0]) == 0  # computed with the old weights: dropped
        assert [g.tokens for g in policy.generate(ps, [10, 10], greedy)] == hf
    finally:  # logits x 30 would scale the later tests' kernel differences by 30 (GPU: 1e-4 -> 3e-3)
        with torch.no_grad():
            policy.model.model.norm.weight.div_(-30)
        policy.sync_weights()


def cached_tokens(policy, prompt: list[int]) -> int:
    """Prompt tokens whose KV the engine took from its prefix cache for a one-token request."""
    from vllm import SamplingParams as VLLMSamplingParams

    out = policy.llm.generate([{"prompt_token_ids": prompt}], VLLMSamplingParams(max_tokens=1), use_tqdm=False)
    return out[0].num_cached_tokens


def test_engine_scores_match_the_trainers(policy):
    """model.vllm.scores=engine: the logits processor's entropies and the raw-logit log-probs equal the
    trainer's (fp32 tiny model; different kernels, so a looser tolerance than rescoring's), greedy included."""
    tok = policy.tokenizer
    policy.scores = "engine"
    try:
        for params in (SamplingParams(temperature=1.3, top_k=20), SamplingParams(greedy=True)):
            gens = policy.generate(prompts(tok), [12, 7, 12], params, torch.Generator().manual_seed(0))
            rows = []
            for i, (p, g) in enumerate(zip(prompts(tok), gens, strict=True)):
                assert len(g.tokens) == len(g.logprobs) == len(g.entropies) >= 1
                t = Trajectory.from_prompt(p, f"t{i}", "g", "task")
                t.append(g.tokens, Source.MODEL, g.logprobs, g.entropies)
                rows.append(t)
            assert ScoreRecorder.records == {} and ScoreRecorder.steps == {}  # all taken, nothing kept
            temperature = 1.0 if params.greedy else params.temperature
            with torch.no_grad():
                logp, ent = score(policy.model, pack(rows, policy.pad_id), temperature, with_entropy=True)
            for i, t in enumerate(rows):
                n = t.response_len
                np.testing.assert_allclose(logp[i, -n:].cpu().numpy(), t.logprobs[t.prompt_len :], atol=2e-3)
                np.testing.assert_allclose(ent[i, -n:].cpu().numpy(), t.entropies[t.prompt_len :], atol=2e-3)
    finally:
        policy.scores = "rescore"


def test_engine_scores_need_an_engine_built_for_them(policy):
    policy.scores, policy.recorder = "engine", False  # as if loaded with model.vllm.scores=rescore
    try:
        with pytest.raises(ValueError, match="model.vllm.scores=engine"):
            policy.generate(prompts(policy.tokenizer)[:1], [4], SamplingParams())
    finally:
        policy.scores, policy.recorder = "rescore", True


def test_recorder_take_maps_positions_to_their_steps(monkeypatch):
    """Hand-worked: each (name, position) reads its own step's row; steps no record needs are dropped."""
    steps = {5: torch.tensor([[1.0, 10.0], [2.0, 20.0]]), 6: torch.tensor([[3.0, 30.0], [4.0, 40.0]]),
             7: torch.tensor([[9.0, 90.0]])}
    records = {"a": {0: (5, 1), 1: (6, 0)}, "b": {0: (5, 0)}, "c": {0: (6, 1)}}
    monkeypatch.setattr(ScoreRecorder, "steps", steps)
    monkeypatch.setattr(ScoreRecorder, "records", records)
    assert ScoreRecorder.take([("a", 2), ("b", 1)]) == [([2.0, 3.0], [20.0, 30.0]), ([1.0], [10.0])]
    assert set(ScoreRecorder.steps) == {6} and set(ScoreRecorder.records) == {"c"}  # c still needs step 6
    assert ScoreRecorder.take([("c", 1), ("d", 0), ("e", 1)]) == [([4.0], [40.0]), ([], []), None]
    assert ScoreRecorder.steps == {} and ScoreRecorder.records == {}
