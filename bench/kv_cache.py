"""Decode step time of juncture's HF backend: preallocated KV cache (GrowableCache) vs transformers' DynamicCache.

Why: DynamicCache concatenates every step's keys and values onto the whole cache, an
O(length) copy per layer per step; GrowableCache writes the step into preallocated room.
On the quickstart's real prompts this times each decode forward (a forward hook; the
prefill forward is left out) and the whole `generate` call, both caches interleaved
(old, new, old, new, ...) so load bursts hit both, keeping each step's best time over the repeats, with the plain padded prefill
(`prefix_reuse=False`: every row holds its whole prompt) and with prefix reuse (the
few-shot header shared by all rows is held once). EOS is disabled so every row decodes its
full budget; both caches must produce the same tokens. `--history N` appends N distinct
random tokens to each row's prompt, like a later turn's history, which prefix reuse cannot share.

    .venv/bin/python bench/kv_cache.py [--batch-sizes 1 16] [--new-tokens 128] [--history 0 512]
        [--dtypes float32 bfloat16] [--reuse off on] [--repeats 3] [--model default] [--json runs/bench/kv_cache.json]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from common import markdown_table, parse_and_setup, write_json
from throughput import task_prompts

from juncture.config import ModelConfig
from juncture.policy.base import SamplingParams
from juncture.policy.hf import HFPolicy

CACHES = {"DynamicCache": False, "GrowableCache": True}  # name: policy.preallocate_kv


def decode(policy: HFPolicy, prompts, new_tokens: int, preallocate: bool, reuse: bool):
    """(seconds of each decode forward, whole call seconds, tokens) for one generate call."""
    policy.preallocate_kv, policy.prefix_reuse = preallocate, reuse
    if policy.kv_store is not None:
        policy.kv_store.clear()  # every call encodes its prompts
    steps: list[float] = []
    start: list[float] = []
    pre = policy.gen_model.register_forward_pre_hook(lambda *_: start.append(time.perf_counter()))
    post = policy.gen_model.register_forward_hook(lambda *_: steps.append(time.perf_counter() - start[-1]))
    try:
        t0 = time.perf_counter()
        outs = policy.generate(prompts, [new_tokens] * len(prompts), SamplingParams(temperature=1.0),
                               torch.Generator().manual_seed(0))
        total = time.perf_counter() - t0
    finally:
        pre.remove()
        post.remove()
    prefill_forwards = len(steps) - (new_tokens - 1)  # the tree prefill runs one forward per tree node
    return steps[prefill_forwards:], total, [o.tokens for o in outs]


def bench(policy: HFPolicy, dtype: str, batch: int, history: int, reuse: bool, args) -> list[dict]:
    g = torch.Generator().manual_seed(history)
    prompts = [p + torch.randint(100, 40000, (history,), generator=g).tolist()
               for p in task_prompts(policy.tokenizer, batch)]
    for preallocate in CACHES.values():  # warm-up
        decode(policy, prompts, min(args.new_tokens, 4), preallocate, reuse)
    steps = {name: [] for name in CACHES}
    totals = {name: [] for name in CACHES}
    tokens = {}
    for rep in range(args.repeats):
        for name, preallocate in CACHES.items():
            s, t, tokens[name] = decode(policy, prompts, args.new_tokens, preallocate, reuse)
            steps[name].append(s)
            totals[name].append(t)
            print(f"  {dtype} B={batch} history={history} reuse={reuse} rep {rep} {name}: {t:.2f} s, "
                  f"median step {1e3 * statistics.median(s):.1f} ms", flush=True)
    if tokens["DynamicCache"] != tokens["GrowableCache"]:
        print(f"  WARNING: {dtype} B={batch} history={history} reuse={reuse}: the two caches sampled different tokens")
    # each decode step's best time over the repeats (load from other processes only adds time), then the median
    best = {name: [min(ts) for ts in zip(*reps, strict=True)] for name, reps in steps.items()}
    old = statistics.median(best["DynamicCache"])
    return [{
        "dtype": dtype, "batch": batch, "history": history, "prefix_reuse": reuse, "cache": name,
        "prompt_len": max(map(len, prompts)), "new_tokens": args.new_tokens,
        "step_ms_median": 1e3 * statistics.median(s), "step_ms_mean": 1e3 * statistics.fmean(s),
        "call_s_median": statistics.median(totals[name]), "speedup_step": old / statistics.median(s),
        "same_tokens": tokens["DynamicCache"] == tokens["GrowableCache"],
    } for name, s in best.items()]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 16])
    ap.add_argument("--new-tokens", type=int, default=128)
    ap.add_argument("--history", type=int, nargs="+", default=[0, 512], help="distinct tokens appended to each prompt")
    ap.add_argument("--dtypes", nargs="+", default=["float32", "bfloat16"], choices=["float32", "bfloat16"])
    ap.add_argument("--reuse", nargs="+", default=["off", "on"], choices=["off", "on"],
                    help="prefix reuse settings to time")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--model", default="default", help="model path (default: SmolLM2-135M-Instruct)")
    args, env = parse_and_setup(ap)

    rows = []
    for dtype in args.dtypes:
        policy = HFPolicy.load(ModelConfig(path=args.model, dtype=dtype), log=lambda *_: None)
        policy.eos_ids = set()  # every row decodes its whole budget
        for batch in args.batch_sizes:
            for history in args.history:
                for reuse in args.reuse:
                    rows += bench(policy, dtype, batch, history, reuse == "on", args)
        del policy

    print(f"\n{args.model}, {env['threads']} threads, torch {env['torch']}, transformers {env['transformers']}; "
          f"{args.new_tokens} new tokens per row; step times: the best of {args.repeats} interleaved calls "
          "for each decode step, then the median (and mean) over the steps.\n")
    print(markdown_table(rows, ["dtype", "batch", "history", "prefix_reuse", "cache", "prompt_len", "step_ms_median",
                                "step_ms_mean", "call_s_median", "speedup_step", "same_tokens"]))
    write_json(args.json, {"env": env, "args": vars(args), "rows": rows})


if __name__ == "__main__":
    main()
