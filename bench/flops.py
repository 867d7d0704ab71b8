"""Training FLOP/s as a fraction of the measured matmul peak (model FLOPs utilization, MFU).

Why: a speed-up is only meaningful next to the physical limit. The peak is measured here, with
large square matrix products in the same dtype on the same threads, not read off a datasheet.
The update's FLOPs are counted as useful model FLOPs: for every real (unpadded) token, 2 per
weight of the transformer's linear layers forward and 4 backward; the vocabulary projection only
for the positions whose logits the loss uses; causal attention (QK^T and AV) over each token's
own context. Padding, recomputation and the optimizer are overhead, so they count as none.

    .venv/bin/python bench/flops.py [--model default] [--device auto] [--dtypes float32 bfloat16]
        [--rows 8 --prompt-len 64 --response-len 192] [--peak-size 2048] [--json runs/bench/flops.json]
"""

from __future__ import annotations

import argparse
import statistics
from functools import partial

import torch
from common import environment, markdown_table, setup, timed, write_json
from throughput import update_step

from juncture.config import ModelConfig
from juncture.policy import packed
from juncture.policy.hf import DTYPES, HFPolicy


def median_time(fn, device: torch.device, repeats: int, warmup: int = 2) -> float:
    return timed({"fn": fn}, repeats, warmup, device, statistics.median)["fn"][0]


def matmul_peak(device: torch.device, dtype: torch.dtype, n: int, repeats: int = 10) -> dict[str, float]:
    """Best FLOP/s of m x m x m products on random data, m in (n/4, n/2, n), per library.

    Several sizes, because one size can miss the library's best blocking (on this CPU a
    2048-cube fp32 product ran below what the training step's own matmuls reached). Several
    libraries, because torch's own `a @ b` is not the fastest on every CPU: on this project's
    AMD machine MKL's fp32 sgemm reaches less than half of what oneDNN does with the right operand
    reordered once (juncture.policy.packed), so `mm` alone would understate the peak.
    """
    g = torch.Generator(device=device).manual_seed(0)
    best = {"mm": 0.0}
    for m in (n // 4, n // 2, n):
        a, b = (torch.randn(m, m, device=device, dtype=dtype, generator=g) for _ in range(2))
        best["mm"] = max(best["mm"], 2 * m**3 / median_time(lambda a=a, b=b: a @ b, device, repeats))
        if device.type == "cpu" and packed.AVAILABLE:
            fn = partial(packed.linear, packed.reorder(b.t(), m), None, a)
            best["onednn"] = max(best.get("onednn", 0.0), 2 * m**3 / median_time(fn, device, repeats))
    return best


def update_flops(config, tokens_per_row: list[int], logit_positions: int) -> float:
    """Useful FLOPs of one forward+backward (see module doc): 3x the forward's."""
    d, layers, inter = config.hidden_size, config.num_hidden_layers, config.intermediate_size
    heads, kv_heads = config.num_attention_heads, config.num_key_value_heads
    head_dim = getattr(config, "head_dim", None) or d // heads
    linear = layers * (d * heads * head_dim * 2 + d * kv_heads * head_dim * 2 + 3 * d * inter)
    tokens = sum(tokens_per_row)
    attention = sum(2 * 2 * layers * heads * head_dim * t * (t + 1) / 2 for t in tokens_per_row)
    forward = 2 * linear * tokens + 2 * d * config.vocab_size * logit_positions + attention
    return 3 * forward


def bench_update(policy: HFPolicy, rows: int, prompt_len: int, response_len: int, repeats: int) -> tuple[float, float]:
    """(seconds, useful FLOPs) of one forward+backward of the policy loss on one flat micro-batch."""
    step, trajs, packed = update_step(policy, rows, prompt_len, response_len)
    t = median_time(step, policy.device, repeats, warmup=1)
    return t, update_flops(policy.model.config, [len(tr) for tr in trajs], rows * (packed.width + 1))


def measure(model: str, device: str, dtypes: list[str], args, log=print) -> list[dict]:
    out = []
    for dtype in dtypes:
        policy = HFPolicy.load(ModelConfig(path=model, dtype=dtype, device=device), log=lambda *_: None)
        dev = policy.device
        peaks = matmul_peak(dev, DTYPES[dtype], args.peak_size)
        peak = max(peaks.values())
        t, flops = bench_update(policy, args.rows, args.prompt_len, args.response_len, args.repeats)
        params = sum(p.numel() for p in policy.model.parameters())
        out.append({"model_params_M": params / 1e6, "device": str(dev), "dtype": dtype, "rows": args.rows,
                    "tokens": args.rows * (args.prompt_len + args.response_len), "update_s": t,
                    "train_tflops": flops / t / 1e12, **{f"peak_{k}_tflops": v / 1e12 for k, v in peaks.items()},
                    "matmul_peak_tflops": peak / 1e12, "mfu": flops / t / peak})
        log(f"  {dtype}: update {t:.3f} s, {flops / t / 1e12:.3f} TFLOP/s of a measured {peak / 1e12:.3f} peak "
            f"({out[-1]['mfu']:.1%})")
        del policy
    return out


COLUMNS = ["model_params_M", "device", "dtype", "rows", "tokens", "update_s", "train_tflops", "peak_mm_tflops",
           "peak_onednn_tflops", "matmul_peak_tflops", "mfu"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="default")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--dtypes", nargs="+", default=["float32", "bfloat16"], choices=["float32", "bfloat16"])
    ap.add_argument("--rows", type=int, default=8)
    ap.add_argument("--prompt-len", type=int, default=64)
    ap.add_argument("--response-len", type=int, default=192)
    ap.add_argument("--peak-size", type=int, default=2048, help="n of the n x n x n matmul (GPU: 8192)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", help="write results to this JSON file")
    args = ap.parse_args()
    setup(args.threads)
    rows = measure(args.model, args.device, args.dtypes, args)
    print(markdown_table(rows, COLUMNS))
    write_json(args.json, {"env": environment(), "args": vars(args), "rows": rows})


if __name__ == "__main__":
    main()
