"""Where a shared prefix should live while decoding, and what folding small tree nodes saves in the prefill.

Why: on a CPU the HF backend can keep the prefix every row starts with apart (read once per step by
the prefix path of `prefix_cache.decode_attention`) or copy it into every row (one SDPA call per
layer). Apart adds a fixed cost per step; copies make each step read the prefix once per row.
`prefix_cache.PREFIX_APART_MIN_BYTES` picks between them by the bytes of the copies beyond the
first row's; this measures the crossover it is set from. Part 1 generates `--new-tokens` per row
both ways, interleaved (`rows` = the prefix in every row, `apart` = kept apart), on synthetic prompts:
`--prefix-lens` shared random tokens plus 20 of each row's own.

Part 2 times the prefill of the quickstart's real prompts (a 135-token header, then questions that
share a few more tokens in small groups) with `fold_small_nodes` (the default) and without it, where
each small shared node costs its own batch-1 forward.

    .venv/bin/python bench/prefix_layout.py [--prefix-lens 135 512] [--rows 2 4 8 16]
        [--dtypes bfloat16 float32] [--new-tokens 128] [--repeats 3] [--json runs/bench/prefix_layout.json]
"""

from __future__ import annotations

import argparse
from contextlib import nullcontext
from unittest.mock import patch

import torch
from common import markdown_table, parse_and_setup, timed, write_json
from throughput import task_prompts

from juncture.config import ModelConfig
from juncture.policy import prefix_cache
from juncture.policy.base import SamplingParams
from juncture.policy.hf import HFPolicy


def generate(policy: HFPolicy, prompts: list[list[int]], new_tokens: int, apart: bool) -> int:
    """Sampled tokens (every row runs the full budget) with the prefix apart or in every row."""
    policy.kv_store.clear()  # it would skip the prefill of prompts seen in the last repeat
    with patch.object(prefix_cache, "PREFIX_APART_MIN_BYTES", -1 if apart else float("inf")):
        outs = policy.generate(prompts, [new_tokens] * len(prompts), SamplingParams(temperature=1.0),
                               torch.Generator().manual_seed(0))
    return sum(len(o.tokens) for o in outs)


def layouts(policy: HFPolicy, dtype: str, args) -> list[dict]:
    rows = []
    gen = torch.Generator().manual_seed(args.seed)
    per_token = prefix_cache.kv_bytes_per_token(policy.gen_model)
    for p in args.prefix_lens:
        header = torch.randint(100, 40000, (p,), generator=gen).tolist()
        for n in args.rows:
            prompts = [header + torch.randint(100, 40000, (20,), generator=gen).tolist() for _ in range(n)]
            assert prefix_cache.plan(prompts, policy.device) is not None, "the cost model chose the padded prefill"
            res = timed({layout: (lambda a=layout == "apart", ps=prompts: generate(policy, ps, args.new_tokens, a))
                         for layout in ("rows", "apart")}, args.repeats)
            copies = (n - 1) * p * per_token
            row = {"dtype": dtype, "prefix_len": p, "rows": n, "copies_mb": copies / 1e6,
                   "rows_s": res["rows"][0], "apart_s": res["apart"][0],
                   "apart_over_rows": res["apart"][0] / res["rows"][0],
                   "default": "apart" if copies > prefix_cache.PREFIX_APART_MIN_BYTES else "rows"}
            print(f"  {dtype} prefix {p} x {n} rows ({row['copies_mb']:.1f} MB of copies): rows {row['rows_s']:.3f} s, "
                  f"apart {row['apart_s']:.3f} s", flush=True)
            rows.append(row)
    return rows


def prefill(policy: HFPolicy, prompts: list[list[int]], fold: bool) -> torch.Tensor:
    unfolded = patch.object(prefix_cache, "fold_small_nodes", lambda root, overhead: root)
    with torch.no_grad(), policy.sampling_weights(), (nullcontext() if fold else unfolded):
        return policy._prefill(prompts)[2]


def folding(policy: HFPolicy, dtype: str, args) -> list[dict]:
    rows = []
    for n in args.rows:
        prompts = task_prompts(policy.tokenizer, n)
        res = timed({name: (lambda f=name == "folded", ps=prompts: prefill(policy, ps, f))
                     for name in ("unfolded", "folded")}, args.repeats)
        rows.append({"dtype": dtype, "rows": n, "unfolded_s": res["unfolded"][0], "folded_s": res["folded"][0],
                     "folded_over_unfolded": res["folded"][0] / res["unfolded"][0],
                     "max_logit_diff": float((res["folded"][1].float() - res["unfolded"][1].float()).abs().max())})
        print(f"  {dtype} prefill of {n} quickstart prompts: unfolded {rows[-1]['unfolded_s']:.3f} s, "
              f"folded {rows[-1]['folded_s']:.3f} s", flush=True)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--prefix-lens", type=int, nargs="+", default=[135, 512])
    ap.add_argument("--rows", type=int, nargs="+", default=[2, 4, 8, 16])
    ap.add_argument("--dtypes", nargs="+", default=["bfloat16", "float32"], choices=["float32", "bfloat16"])
    ap.add_argument("--new-tokens", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=3)
    args, env = parse_and_setup(ap, seed=True)
    layout_rows, fold_rows = [], []
    for dtype in args.dtypes:
        policy = HFPolicy.load(ModelConfig(dtype=dtype), log=lambda *_: None)
        policy.eos_ids = set()
        fold_rows += folding(policy, dtype, args)
        layout_rows += layouts(policy, dtype, args)
        del policy
    print(f"\nSmolLM2-135M-Instruct, {env['threads']} threads, torch {env['torch']}; best of {args.repeats} "
          f"interleaved calls; PREFIX_APART_MIN_BYTES = {prefix_cache.PREFIX_APART_MIN_BYTES / 1e6:.1f} MB.\n")
    print(markdown_table(layout_rows, ["dtype", "prefix_len", "rows", "copies_mb", "rows_s", "apart_s",
                                       "apart_over_rows", "default"]))
    print()
    print(markdown_table(fold_rows, ["dtype", "rows", "unfolded_s", "folded_s", "folded_over_unfolded",
                                     "max_logit_diff"]))
    write_json(args.json, {"env": env, "args": vars(args), "layouts": layout_rows, "folding": fold_rows})


if __name__ == "__main__":
    main()
