"""Rollout and training throughput of juncture's HF backend on SmolLM2-135M-Instruct (CPU).

Why: juncture samples with a hand-written decode loop (it needs per-token log-probs,
entropies and stop strings), so this measures what that costs against plain
`model.generate` on the same model, dtype, prompts and token budget; and how many tokens
per second a forward+backward of the policy loss trains, in fp32 and bf16 autocast.

    .venv/bin/python bench/throughput.py [--batch-sizes 1 8 16] [--new-tokens 128]
        [--dtypes float32 bfloat16] [--repeats 2] [--eos-seeds 4] [--skip-equal-length] [--skip-train]
        [--json runs/bench/throughput.json]
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
import torch
from common import markdown_table, parse_and_setup, timed, write_json
from transformers import GenerationConfig

from juncture.agent.loop import encode_prompt
from juncture.config import LossConfig, ModelConfig, load_config
from juncture.policy.base import SamplingParams
from juncture.policy.hf import HFPolicy
from juncture.tasks import build_tasks
from juncture.train.batching import pack, score
from juncture.train.loss import policy_loss, token_weights
from juncture.tree import Source, Trajectory


def task_prompts(tokenizer, n: int) -> list[list[int]]:
    """The quickstart's real prompts (few-shot, python tool, chain_sum questions)."""
    cfg = load_config(None, ["task.train_size=64", "task.eval_size=1"])
    train, _ = build_tasks(cfg.task)
    return [encode_prompt(tokenizer, train[i % len(train)], cfg.agent.tools, cfg.agent.prompt) for i in range(n)]


def hf_generate(policy: HFPolicy, prompts: list[list[int]], new_tokens: int, stop_at_eos: bool = False) -> int:
    """Plain transformers sampling; returns the tokens generated.

    Without `stop_at_eos` every row is forced to exactly `new_tokens`. With it, rows end at EOS as
    in a rollout (generate pads a finished row until the longest one ends); a row's tokens are
    counted up to and including its EOS.
    """
    width = max(map(len, prompts))
    ids = torch.full((len(prompts), width), policy.pad_id, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, p in enumerate(prompts):
        ids[i, width - len(p) :] = torch.tensor(p)
        mask[i, width - len(p) :] = 1
    gen_cfg = GenerationConfig(
        do_sample=True, temperature=1.0, top_k=0, top_p=1.0, max_new_tokens=new_tokens,
        min_new_tokens=0 if stop_at_eos else new_tokens, pad_token_id=policy.pad_id, eos_token_id=sorted(policy.eos_ids),
    )
    with torch.no_grad():
        out = policy.gen_model.generate(input_ids=ids.to(policy.device), attention_mask=mask.to(policy.device),
                                        generation_config=gen_cfg)[:, width:].cpu()
    if not stop_at_eos:
        return out.numel()
    is_eos = torch.isin(out, torch.tensor(sorted(policy.eos_ids)))
    first = torch.where(is_eos.any(1), is_eos.int().argmax(1) + 1, torch.full((len(out),), out.shape[1]))
    return int(first.sum())


def juncture_generate(policy: HFPolicy, prompts, new_tokens: int, gen: torch.Generator, stop_at_eos: bool) -> int:
    """juncture's decode loop; without `stop_at_eos` every row runs the full budget, as with min_new_tokens.

    The KV store is emptied first: it would otherwise skip the prefill of prompts seen in the last repeat.
    """
    if getattr(policy, "kv_store", None) is not None:
        policy.kv_store.clear()
    eos = policy.eos_ids
    policy.eos_ids = eos if stop_at_eos else set()
    try:
        outs = policy.generate(prompts, [new_tokens] * len(prompts), SamplingParams(temperature=1.0), gen)
    finally:
        policy.eos_ids = eos
    return sum(len(o.tokens) for o in outs)


def juncture_generate_unfused(policy: HFPolicy, *args) -> int:
    """juncture_generate with the decode steps run by transformers' forward instead of the fused decoder."""
    fused, policy.fused_decoder = policy.fused_decoder, None
    try:
        return juncture_generate(policy, *args)
    finally:
        policy.fused_decoder = fused


def bench_rollout(policy: HFPolicy, dtype: str, batch: int, new_tokens: int, repeats: int) -> dict:
    """Equal-length comparison: hf vs juncture, with and without the fused decode step (rows stopping at EOS:
    `bench_rollout_eos`, which sums tokens and seconds over seeds instead of pairing a best time with a count)."""
    prompts = task_prompts(policy.tokenizer, batch)
    gen = torch.Generator().manual_seed(0)
    fns = {
        "hf": lambda n=new_tokens: hf_generate(policy, prompts, n),
        "juncture": lambda n=new_tokens: juncture_generate(policy, prompts, n, gen, stop_at_eos=False),
        "juncture_unfused": lambda n=new_tokens: juncture_generate_unfused(policy, prompts, n, gen, False),
    }
    for fn in fns.values():  # a short warm-up: it only has to touch every kernel once
        fn(8)
    res = {name: (n / t, n, t) for name, (t, n) in timed(fns, repeats, warmup=0).items()}
    row = {"dtype": dtype, "batch": batch, "prompt_len": max(map(len, prompts))}
    for name, (rate, n, t) in res.items():
        row.update({f"{name}_tokens": n, f"{name}_s": t, f"{name}_tok_s": rate})
    row["ratio"] = row["juncture_tok_s"] / row["hf_tok_s"]
    row["unfused_ratio"] = row["juncture_unfused_tok_s"] / row["hf_tok_s"]
    print(f"  rollout {dtype} batch={batch}: model.generate {row['hf_tok_s']:.1f} tok/s, juncture "
          f"{row['juncture_tok_s']:.1f} tok/s ({row['juncture_unfused_tok_s']:.1f} with transformers' decode "
          f"step)", flush=True)
    return row


def bench_rollout_eos(policy: HFPolicy, dtype: str, batch: int, new_tokens: int, repeats: int) -> dict:
    """Both loops stopping rows at EOS, as rollouts do: generated tokens / s, summed over `repeats` seeds.

    The same seed gives the two loops different samples (different random streams), so a row's
    length differs between them; over many rows both draw lengths from the same distribution.
    Timed interleaved; token and time totals are summed, not best-of, because lengths vary by seed.
    """
    prompts = task_prompts(policy.tokenizer, batch)
    totals = {"hf": [0, 0.0], "juncture": [0, 0.0]}
    hf_generate(policy, prompts, 8, stop_at_eos=True)  # warm-up
    for seed in range(repeats):
        for name in totals:
            torch.manual_seed(seed)
            t0 = time.perf_counter()
            n = (hf_generate(policy, prompts, new_tokens, stop_at_eos=True) if name == "hf" else
                 juncture_generate(policy, prompts, new_tokens, torch.Generator().manual_seed(seed), stop_at_eos=True))
            totals[name][0] += n
            totals[name][1] += time.perf_counter() - t0
    row = {"dtype": dtype, "batch": batch, "seeds": repeats}
    for name, (n, t) in totals.items():
        row.update({f"{name}_tokens": n, f"{name}_s": t, f"{name}_tok_s": n / t})
    row["ratio"] = row["juncture_tok_s"] / row["hf_tok_s"]
    print(f"  rollout to EOS {dtype} batch={batch}: model.generate {row['hf_tok_s']:.1f} tok/s, "
          f"juncture {row['juncture_tok_s']:.1f} tok/s", flush=True)
    return row


def synthetic_rows(n: int, prompt_len: int, response_len: int, vocab: int, seed: int = 0) -> list[Trajectory]:
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        t = Trajectory.from_prompt(rng.integers(3, vocab, prompt_len).tolist(), f"r{i}", f"g{i // 4}", "t")
        t.append(rng.integers(3, vocab, response_len).tolist(), Source.MODEL,
                 rng.uniform(-5, 0, response_len).tolist(), rng.uniform(0, 5, response_len).tolist())
        rows.append(t)
    return rows


def update_step(policy: HFPolicy, rows: int, prompt_len: int, response_len: int):
    """(step, trajectories, packed): `step()` runs one forward+backward of the policy loss (no optimizer step)
    on a flat micro-batch of synthetic rows, on the policy's device."""
    trajs = synthetic_rows(rows, prompt_len, response_len, policy.model.config.vocab_size)
    packed = pack(trajs, policy.pad_id)
    weights = packed.tail(token_weights([np.asarray(t.loss_mask) for t in trajs], "token-mean", response_len))
    adv = packed.tail([np.asarray(t.loss_mask, dtype=np.float32) * (1 if i % 2 else -1) for i, t in enumerate(trajs)])
    weights, adv = weights.to(policy.device), adv.to(policy.device)
    model = policy.model.train()

    def step():
        model.zero_grad(set_to_none=True)
        with policy.train_forward():
            logp, _ = score(model, packed, 1.0)
        loss, _ = policy_loss(logp, logp.detach(), adv, weights, LossConfig())
        loss.backward()

    return step, trajs, packed


def bench_train(policy: HFPolicy, dtype: str, rows: int, prompt_len: int, response_len: int, repeats: int) -> list[dict]:
    """Forward+backward of the policy loss on one packed micro-batch (no optimizer step).

    fp32 on a CPU is timed both ways, interleaved: through the oneDNN-reordered weights (the default,
    `policy.pack_weights`) and through plain `F.linear`.
    """
    step, _, packed = update_step(policy, rows, prompt_len, response_len)
    both = dtype == "float32" and policy.pack_weights and policy.device.type == "cpu"

    def with_packing(on: bool):
        def run():
            policy.pack_weights = on
            try:
                step()
            finally:
                policy.pack_weights = both
        return run

    fns = {"oneDNN reordered": with_packing(True), "F.linear": with_packing(False)} if both else {"default": step}
    trained, total = int(packed.loss_mask.sum()), int(packed.attention_mask.sum())
    out = []
    for matmuls, (t, _) in timed(fns, repeats).items():
        print(f"  train {dtype} ({matmuls}): {t:.2f} s per fwd+bwd", flush=True)
        out.append({"dtype": dtype, "matmuls": matmuls, "rows": rows, "prompt_len": prompt_len,
                    "response_len": response_len, "s": t, "trained_tok_s": trained / t, "total_tok_s": total / t})
    if both:  # what the reordered copies cost after each optimizer step (weights and their transposes)
        out[0]["remake_s"] = timed({"remake": lambda: remake_packed(policy)}, repeats)["remake"][0]
        print(f"  re-making the reordered copies after a weight change: {out[0]['remake_s']:.2f} s", flush=True)
    return out


def remake_packed(policy: HFPolicy) -> None:
    with torch.no_grad():
        next(policy.model.parameters()).add_(0.0)  # bumps the version, as an optimizer step does
    policy._packed.sync(transposed=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8, 16])
    ap.add_argument("--new-tokens", type=int, default=128)
    ap.add_argument("--dtypes", nargs="+", default=["float32", "bfloat16"], choices=["float32", "bfloat16"])
    ap.add_argument("--repeats", type=int, default=2, help="timed repeats (best of) after one warm-up")
    ap.add_argument("--train-rows", type=int, default=8)
    ap.add_argument("--train-prompt-len", type=int, default=64)
    ap.add_argument("--train-response-len", type=int, default=192)
    ap.add_argument("--skip-train", action="store_true")
    ap.add_argument("--eos-seeds", type=int, default=0,
                    help="also time both loops stopping at EOS, summed over this many seeds (0: skip)")
    ap.add_argument("--skip-equal-length", action="store_true", help="skip the equal-length comparison")
    args, env = parse_and_setup(ap)

    rollout, rollout_eos, train = [], [], []
    results = {"env": env, "args": vars(args), "rollout": rollout, "rollout_eos": rollout_eos, "train": train}
    for dtype in args.dtypes:
        policy = HFPolicy.load(ModelConfig(path="default", dtype=dtype), log=lambda *_: None)
        for b in args.batch_sizes:
            if not args.skip_equal_length:
                rollout.append(bench_rollout(policy, dtype, b, args.new_tokens, args.repeats))
            if args.eos_seeds:
                rollout_eos.append(bench_rollout_eos(policy, dtype, b, args.new_tokens, args.eos_seeds))
            write_json(args.json, results, quiet=True)  # partial results survive an interrupted run
        if not args.skip_train:
            train.extend(bench_train(policy, dtype, args.train_rows, args.train_prompt_len,
                                     args.train_response_len, args.repeats))
            write_json(args.json, results, quiet=True)
        del policy

    env["load_avg_1m_end"] = os.getloadavg()[0]
    print(f"\nSmolLM2-135M-Instruct, {env['threads']} threads, torch {env['torch']}, "
          f"transformers {env['transformers']}, max_new_tokens={args.new_tokens}, best of {args.repeats}, "
          f"load avg {env['load_avg_1m']:.1f} at start, {env['load_avg_1m_end']:.1f} at end\n")
    if rollout:
        print("Rollout (generated tokens/s; hf = model.generate; ratio = juncture / hf at equal lengths; "
              "unfused = juncture with transformers' decode step instead of the fused one):\n")
        print(markdown_table(rollout, ["dtype", "batch", "prompt_len", "hf_tokens", "hf_tok_s", "juncture_tokens",
                                       "juncture_tok_s", "ratio", "juncture_unfused_tok_s", "unfused_ratio"]))
    if rollout_eos:
        print("\nRollout to EOS (both loops stop rows at EOS; tokens and seconds summed over the seeds):\n")
        print(markdown_table(rollout_eos, ["dtype", "batch", "seeds", "hf_tokens", "hf_s", "hf_tok_s",
                                           "juncture_tokens", "juncture_s", "juncture_tok_s", "ratio"]))
    if train:
        print("\nTraining (forward+backward of the policy loss, one packed micro-batch):\n")
        print(markdown_table(train, ["dtype", "matmuls", "rows", "prompt_len", "response_len", "s", "trained_tok_s",
                                     "total_tok_s", "remake_s"]))
    write_json(args.json, results)


if __name__ == "__main__":
    main()
