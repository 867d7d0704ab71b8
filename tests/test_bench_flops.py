"""bench/flops.py's useful-FLOP count: a hand-worked example and torch's own FLOP counter."""

from __future__ import annotations

import sys
from pathlib import Path
from types import SimpleNamespace

import torch
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
from flops import update_flops  # noqa: E402


def test_hand_worked_count():
    cfg = SimpleNamespace(hidden_size=4, num_hidden_layers=1, intermediate_size=8, num_attention_heads=2,
                          num_key_value_heads=1, head_dim=2, vocab_size=10)
    # linear weights: q,o 4*2*2 each, k,v 4*1*2 each, mlp 3*4*8 -> 144; 3 tokens -> 2*144*3 = 864
    # logits: 2 positions * 2*4*10 = 160; causal attention: 2 matmuls * 2 * 2 heads * 2 dims * (1+2+3) = 96
    assert update_flops(cfg, [3], 2) == 3 * (864 + 160 + 96)


def test_linear_and_logit_terms_match_torch_flop_counter(tiny_model_dir):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32, attn_implementation="eager")
    t, keep = 12, 5
    ids = torch.randint(3, 1000, (1, t))
    with FlopCounterMode(display=False) as counter:
        model(input_ids=ids, logits_to_keep=keep)
    c = model.config
    # eager attention is plain matmuls, which the counter charges for the full t x t square; ours
    # charges the causal triangle
    full_attention = 2 * 2 * c.num_hidden_layers * c.num_attention_heads * c.head_dim * t * t
    causal_attention = 2 * 2 * c.num_hidden_layers * c.num_attention_heads * c.head_dim * t * (t + 1) / 2
    ours_forward = update_flops(c, [t], keep) / 3
    assert ours_forward - causal_attention + full_attention == counter.get_total_flops()
