"""Prefill of a later turn and of branches: leaves batched vs one forward per leaf vs the padded prefill.

Why: the agent loop calls generate once per turn with every row's whole history, and branches
start from their parent's tokens, so the KV store already holds almost every prompt; what is left
to encode per row is a leaf of the prefix tree (a turn's new tokens, a branch's fork token).
The walk used to run one batch-1 forward per leaf; now the leaves share padded forwards
(`prefix_cache.leaf_batches`). Three ways of preparing the same decode batch are timed, interleaved:

- `padded`: no reuse, one padded forward over every row's whole prompt (`prefix_reuse=False`);
- `walk`: the previous behaviour: the store and the tree, every node in its own batch-1 forward during the
  walk (`prefix_cache.deferred` patched to refuse every node);
- `batched`: the default.

Workloads, on the quickstart's real prompts (`--tasks` prompts x `--group` rows each): `turn`, turn 1
samples `--turn1-tokens` tokens per row (budgets staggered so lengths differ), then each row gets
8-64 new tokens (a tool result and the chat template's tokens); `branches`, `--group` branches per
row forked at random points of its turn-1 response. The logits of the three must agree.

    .venv/bin/python bench/prefill.py [--tasks 2 4] [--group 4] [--dtypes float32 bfloat16] [--repeats 3]
        [--json runs/bench/prefill.json]
"""

from __future__ import annotations

import argparse
import random
from contextlib import contextmanager

import torch
from common import markdown_table, parse_and_setup, timed, write_json
from throughput import task_prompts

from juncture.config import ModelConfig
from juncture.policy import prefix_cache
from juncture.policy.base import SamplingParams
from juncture.policy.hf import HFPolicy


@contextmanager
def nothing_deferred():
    """The walk as it was: every node encoded in its own batch-1 forward, in the walk (and costed so by `plan`)."""
    deferred = prefix_cache.deferred
    prefix_cache.deferred = lambda node, root: False
    try:
        yield
    finally:
        prefix_cache.deferred = deferred


def workloads(policy: HFPolicy, tasks: int, group: int, turn1_tokens: int, seed: int) -> dict[str, list[list[int]]]:
    """{name: prompts} after a turn-1 generate call that leaves every row's KV in the store."""
    rng = random.Random(seed)
    prompts = [p for p in task_prompts(policy.tokenizer, tasks) for _ in range(group)]
    budgets = [turn1_tokens - 4 * (i % group) for i in range(len(prompts))]
    policy.kv_store.clear()
    first = policy.generate(prompts, budgets, SamplingParams(), torch.Generator().manual_seed(seed))
    histories = [p + g.tokens for p, g in zip(prompts, first, strict=True)]
    turn = [h + [rng.randrange(100, 40000) for _ in range(rng.randint(8, 64))] for h in histories]
    branches = [h[: len(p) + rng.randint(1, len(h) - len(p))] for p, h in zip(prompts, histories, strict=True)
                for _ in range(group)]
    return {"turn": turn, "branches": branches}


def prefill(policy: HFPolicy, prompts: list[list[int]], mode: str) -> torch.Tensor:
    """The last-token logits after preparing the decode batch `mode`'s way (as generate does: reordered weights)."""
    with torch.no_grad(), policy.sampling_weights():
        if mode == "padded":
            policy.prefix_reuse = False
            try:
                return policy._prefill(prompts)[2]
            finally:
                policy.prefix_reuse = True
        if mode == "walk":
            with nothing_deferred():
                return policy._prefill(prompts, policy.kv_store)[2]
        return policy._prefill(prompts, policy.kv_store)[2]


def bench(policy: HFPolicy, dtype: str, tasks: int, group: int, args) -> list[dict]:
    policy.eos_ids = set()
    rows = []
    for workload, prompts in workloads(policy, tasks, group, args.turn1_tokens, args.seed).items():
        tree = prefix_cache.plan(prompts, policy.device, policy.kv_store)
        assert tree is not None, "the cost model chose the padded prefill: nothing to compare"
        leaves = sum(prefix_cache.deferred(n, tree) for n in prefix_cache.nodes(tree))

        fns = {mode: (lambda m=mode, p=prompts: prefill(policy, p, m)) for mode in ("padded", "walk", "batched")}
        res = timed(fns, args.repeats)
        ref = res["padded"][1].float()
        row = {"dtype": dtype, "workload": workload, "rows": len(prompts), "leaves": leaves,
               "prompt_len_max": max(map(len, prompts)),
               "encoded_tokens": sum(n.end - prefix_cache.encode_from(n) for n in prefix_cache.nodes(tree))}
        for mode, (t, logits) in res.items():
            row[f"{mode}_s"] = t
            row[f"{mode}_max_logit_diff"] = float((logits.float() - ref).abs().max())
        row["walk_over_batched"] = row["walk_s"] / row["batched_s"]
        row["padded_over_batched"] = row["padded_s"] / row["batched_s"]
        print(f"  {dtype} {workload} rows={len(prompts)} leaves={leaves}: padded {row['padded_s']:.3f} s, "
              f"walk {row['walk_s']:.3f} s, batched {row['batched_s']:.3f} s", flush=True)
        rows.append(row)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tasks", type=int, nargs="+", default=[2, 4])
    ap.add_argument("--group", type=int, default=4)
    ap.add_argument("--turn1-tokens", type=int, default=48)
    ap.add_argument("--dtypes", nargs="+", default=["float32", "bfloat16"], choices=["float32", "bfloat16"])
    ap.add_argument("--repeats", type=int, default=3)
    args, env = parse_and_setup(ap, seed=True)
    rows = []
    for dtype in args.dtypes:
        policy = HFPolicy.load(ModelConfig(dtype=dtype), log=lambda *_: None)
        for tasks in args.tasks:
            rows += bench(policy, dtype, tasks, args.group, args)
        del policy
    print(f"\nSmolLM2-135M-Instruct, {env['threads']} threads, torch {env['torch']}; best of {args.repeats} "
          "interleaved calls; max_logit_diff: largest |logit| difference from the padded prefill.\n")
    print(markdown_table(rows, ["dtype", "workload", "rows", "leaves", "prompt_len_max", "encoded_tokens", "padded_s",
                                "walk_s", "batched_s", "walk_over_batched", "padded_over_batched",
                                "batched_max_logit_diff", "walk_max_logit_diff"]))
    write_json(args.json, {"env": env, "args": vars(args), "rows": rows})


if __name__ == "__main__":
    main()
