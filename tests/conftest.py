"""Shared fixtures: a tiny random Llama with SmolLM2's tokenizer (3.2M params, no weights needed)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
torch.set_num_threads(2)

TOKENIZER_DIR = Path(__file__).parent / "fixtures" / "smollm2_tokenizer"


def make_tiny_model_dir(target: Path, seed: int = 0) -> Path:
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tok = AutoTokenizer.from_pretrained(TOKENIZER_DIR)
    cfg = LlamaConfig(
        vocab_size=49152, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, head_dim=16, max_position_embeddings=2048, tie_word_embeddings=True,
        bos_token_id=1, eos_token_id=2, pad_token_id=2,
    )
    torch.manual_seed(seed)
    LlamaForCausalLM(cfg).save_pretrained(target)
    tok.save_pretrained(target)
    return target


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    return make_tiny_model_dir(tmp_path_factory.mktemp("tiny-model"))


@pytest.fixture(scope="module")
def prefix_apart():
    """Keep a shared prefix apart however few bytes its copies would take: the tiny model's KV is too small for
    the real threshold, and tests of the shared-prefix path need it taken (module scope: hypothesis tests use it)."""
    from juncture.policy import prefix_cache

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(prefix_cache, "PREFIX_APART_MIN_BYTES", 0)
        yield


@pytest.fixture(scope="session")
def tokenizer():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(TOKENIZER_DIR)


@pytest.fixture(scope="session")
def appo_run_dir(tiny_model_dir, tmp_path_factory) -> Path:
    """A real 3-step APPO run on the tiny model (2 prompts × (2 rollouts + 2 branches), first turn scripted
    to call the Python tool, even-token reward so advantages and Ω^BS are not all zero after step 1)."""
    from test_train_appo import make_trainer

    from juncture.train.pipeline import prepare_run_dir

    run_dir = tmp_path_factory.mktemp("appo-run") / "run"
    trainer, _ = make_trainer(tiny_model_dir, run_dir, "algorithm.branching=appo", "algorithm.credit=appo",
                              "task.name=toy:even_tokens", "train.updates_per_step=1", "train.steps=3")
    prepare_run_dir(trainer.cfg, resume=False)
    for step in range(trainer.cfg.train.steps):
        trainer.metrics.log(step + 1, trainer.train_step(step))
    trainer.metrics.close()
    return run_dir
