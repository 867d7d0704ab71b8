"""Tree-packed vs flat update on an APPO batch whose branch rows are trained (SmolLM2, CPU).

Why: a branch repeats its parent's tokens up to the fork, and every row of a group repeats the
prompt (the few-shot header is shared across prompts too). The flat update recomputes all of it
per row, forward and backward; `train.packing=tree` computes each shared prefix once
(juncture/train/tree_packing.py). This times one `Trainer.update` (credit, log-prob passes,
forward/backward over micro-batches, optimizer step, weight sync) on the same batch with each
packing, interleaved in one run, and checks that both report the same loss.

The batch: `--prompts` real quickstart prompts (few-shot, python tool, chain_sum), each with
`--initial` rollouts and `--branches` branches (APPO credit, `train_on_branch_rows=true`).
A rollout's response is a model segment, a `--tool-len`-token tool result and a second model
segment, about `--response-len` tokens in all (uniform 60-100 %); a branch forks its group's
rollout at a uniformly drawn model token and continues to a response of the same length
distribution. Token ids are random: the update's cost depends on lengths and sharing only.
The default length (38-64 response tokens) matches the quickstart's first steps (about 30 model
tokens per rollout plus a tool result, docs/benchmarks.md); `--response-len 160` (its budget) is
the conservative case: the longer the responses, the smaller the share of the shared prompt.
`--rollouts` replays a real step instead: a run's `rollouts/step_*.jsonl.gz` (then `--prompts/
--initial/--branches/--response-len/--tool-len` are ignored; `train_on_branch_rows` is on either way).

    .venv/bin/python bench/packed_update.py [--prompts 4 --initial 4 --branches 4 --response-len 64]
        [--micro-batch 8] [--updates-per-step 1] [--dtypes float32 bfloat16] [--repeats 3]
        [--rollouts runs/quickstart/rollouts/step_000003.jsonl.gz] [--json runs/bench/packed_update.json]
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import tempfile
from pathlib import Path

import numpy as np
from common import markdown_table, parse_and_setup, timed, write_json

from juncture.agent.loop import encode_prompt
from juncture.config import load_config
from juncture.policy.hf import HFPolicy
from juncture.tasks import build_tasks
from juncture.train.batching import pack
from juncture.train.rl import Trainer
from juncture.train.tree_packing import packer, tree_pack
from juncture.tree import Source, Trajectory


def model_segment(t: Trajectory, n: int, rng, vocab: int) -> None:
    t.append(rng.integers(100, vocab, n).tolist(), Source.MODEL, rng.uniform(-5, 0, n).tolist(),
             rng.uniform(0, 5, n).tolist())


def appo_batch(tokenizer, args, vocab: int, seed: int = 0) -> list[Trajectory]:
    cfg = load_config(None, ["task.train_size=64", "task.eval_size=1"])
    tasks, _ = build_tasks(cfg.task)
    rng = np.random.default_rng(seed)
    length = lambda: max(8, int(args.response_len * rng.uniform(0.6, 1.0)))  # noqa: E731
    rows = []
    for p in range(args.prompts):
        prompt = encode_prompt(tokenizer, tasks[p], cfg.agent.tools, cfg.agent.prompt)
        group = []
        for i in range(args.initial):
            t = Trajectory.from_prompt(prompt, f"p{p}-r{i}", f"p{p}", tasks[p].id)
            total = length()
            first = int(rng.integers(4, max(5, total - args.tool_len - 4)))
            model_segment(t, first, rng, vocab)
            t.append(rng.integers(100, vocab, args.tool_len).tolist(), Source.TOOL)
            t.new_turn()
            model_segment(t, max(1, total - first - args.tool_len), rng, vocab)
            group.append(t)
        for b in range(args.branches):
            parent = group[b % args.initial]
            fork = int(rng.choice([i for i, s in enumerate(parent.sources) if s == Source.MODEL]))
            child = parent.branch(fork, f"{parent.traj_id}-b{b}")
            model_segment(child, max(1, length() - (fork + 1 - len(prompt))), rng, vocab)
            group.append(child)
        for i, t in enumerate(group):
            t.reward = float((i + p) % 2)
        rows += group
    return rows


def use_packing(trainer: Trainer, mode: str) -> None:
    trainer.cfg.train.packing = mode
    trainer.pack, trainer.score = packer(mode, trainer.policy.pad_id)


def fed_tokens(rows: list[Trajectory], micro: int, mode: str, pad_id: int) -> tuple[int, int]:
    """(tokens through the transformer, positions projected onto the vocabulary) per update."""
    if mode == "tree":
        rows = sorted(rows, key=lambda t: t.tokens)
    tokens = logits = 0
    for i in range(0, len(rows), micro):
        chunk = rows[i : i + micro]
        if mode == "tree":
            p = tree_pack(chunk)
            tokens, logits = tokens + p.input_ids.shape[1], logits + len(p.keep)
        else:
            p = pack(chunk, pad_id)
            tokens, logits = tokens + p.input_ids.numel(), logits + len(chunk) * (p.width + 1)
    return tokens, logits


def bench(dtype: str, args, run_dir: str) -> list[dict]:
    cfg = load_config(None, [
        f"run_dir={run_dir}/{dtype}", f"model.path={args.model}", f"model.dtype={dtype}", "task.train_size=8", "task.eval_size=1",
        "algorithm.branching=appo", "algorithm.credit=appo", f"algorithm.n_initial={args.initial}",
        f"algorithm.group_size={args.initial + args.branches}", "algorithm.branch.train_on_branch_rows=true",
        f"train.micro_batch_size={args.micro_batch}", f"train.updates_per_step={args.updates_per_step}",
        "logging.progress=false",
    ])
    policy = HFPolicy.load(cfg.model, log=lambda *_: None)
    train_tasks, _ = build_tasks(cfg.task)
    trainer = Trainer(cfg, policy, {}, train_tasks, Path(cfg.run_dir))
    if args.rollouts:
        with gzip.open(args.rollouts, "rt") as f:
            rows = [Trajectory.from_dict(json.loads(line)) for line in f if line.strip()]
    else:
        rows = appo_batch(policy.tokenizer, args, policy.model.config.vocab_size)
    trained = sum(int(t.model_tokens_after(t.fork_pos)) if t.kind == "branch" else t.num_model_tokens for t in rows)

    def update(mode):
        def run():
            use_packing(trainer, mode)
            return trainer.update(rows)
        return run

    res = timed({"flat": update("flat"), "tree": update("tree")}, args.repeats)
    out = []
    for mode in ("flat", "tree"):
        t, stats = res[mode]
        tokens, logits = fed_tokens(rows, args.micro_batch, mode, policy.pad_id)
        out.append({"dtype": dtype, "packing": mode, "rows": len(rows), "update_s": t, "vs_flat": t / res["flat"][0],
                    "fed_tokens": tokens, "logit_positions": logits, "trained_tokens": trained,
                    "trained_tok_s": trained / t, "loss": stats["train/loss"], "ratio": stats["train/ratio"]})
        print(f"  {dtype} {mode}: {t:.2f} s per update ({tokens} tokens fed)", flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="default", help="model path ('default': the packaged SmolLM2)")
    ap.add_argument("--prompts", type=int, default=4)
    ap.add_argument("--initial", type=int, default=4, help="initial rollouts per prompt")
    ap.add_argument("--branches", type=int, default=4, help="branches per prompt (trained)")
    ap.add_argument("--response-len", type=int, default=64, help="longest response (quickstart budget: 160)")
    ap.add_argument("--tool-len", type=int, default=12, help="tool-result tokens inside each rollout")
    ap.add_argument("--micro-batch", type=int, default=8, help="rows per forward/backward (quickstart: 8)")
    ap.add_argument("--updates-per-step", type=int, default=1, help=">1 adds an old-policy log-prob pass")
    ap.add_argument("--dtypes", nargs="+", default=["float32", "bfloat16"], choices=["float32", "bfloat16"])
    ap.add_argument("--repeats", type=int, default=3, help="timed repeats (best of) after one warm-up")
    ap.add_argument("--rollouts", help="replay this rollout log (a run's rollouts/step_*.jsonl.gz) as the batch")
    args, env = parse_and_setup(ap)
    rows = []
    with tempfile.TemporaryDirectory() as run_dir:
        for dtype in args.dtypes:
            rows += bench(dtype, args, run_dir)
    env["load_avg_1m_end"] = os.getloadavg()[0]
    print(f"\nSmolLM2-135M-Instruct, {env['threads']} threads, torch {env['torch']}, transformers "
          f"{env['transformers']}; {args.prompts} prompts x ({args.initial} initial + {args.branches} branches), "
          f"response <= {args.response_len}, micro-batch {args.micro_batch}, best of {args.repeats}; "
          f"load avg {env['load_avg_1m']:.1f} at start, {env['load_avg_1m_end']:.1f} at end\n")
    print(markdown_table(rows, ["dtype", "packing", "rows", "update_s", "vs_flat", "fed_tokens", "logit_positions",
                                "trained_tok_s", "loss", "ratio"]))
    write_json(args.json, {"env": env, "args": vars(args), "rows": rows})


if __name__ == "__main__":
    main()
