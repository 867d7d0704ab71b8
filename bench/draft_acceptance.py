"""Would speculative decoding pay here? How often the policy would accept a prompt-lookup draft.

Why: a decode step reads every weight once per generated token, which bounds how cheap a branch can be
(`branch_cost.py --bounds`). Speculative decoding checks several drafted tokens per read, and stays exact
at temperature 1 when a draft token x is accepted with probability p(x). A prompt-lookup draft needs no
second model: the token that followed the latest earlier occurrence of the context's last n tokens
(n <= --ngram, longest first; the few-shot prompt and tool results count as context).

For every model token of a run's logged rollouts, this scores the trajectory with a policy and reports
the share of positions that have a draft, the mean p(draft) (the acceptance probability), and how often
the draft equals the token actually sampled. Step 0's rollouts are scored by the model the run started
from (the policy that sampled them); a later step's by the run's latest checkpoint (a few updates later
than its sampler, so an estimate).

    .venv/bin/python bench/draft_acceptance.py [--run runs/quickstart] [--steps 0 9] [--rows 48] [--ngram 3]
        [--json runs/bench/draft_acceptance.json]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from common import markdown_table, parse_and_setup, write_json
from transformers import AutoModelForCausalLM

from juncture.config import load_config
from juncture.policy.loading import resolve_model
from juncture.train.checkpoint import latest_checkpoint
from juncture.tree import Source
from juncture.tree.trajectory import read_jsonl


def draft(tokens: list[int], i: int, ngram: int) -> int | None:
    """The prompt-lookup draft for position i: what followed the latest earlier occurrence of tokens[i-n:i]."""
    for n in range(min(ngram, i), 0, -1):
        suffix = tokens[i - n : i]
        for j in range(i - n - 1, -1, -1):
            if tokens[j : j + n] == suffix:
                return tokens[j + n]
    return None


def acceptance(model, path: Path, rows: int, ngram: int) -> dict:
    trajs = read_jsonl(path)[:rows]
    model_tokens = drafted = same = 0
    accept = 0.0
    for t in trajs:
        with torch.inference_mode():
            probs = torch.softmax(model(torch.tensor([t.tokens])).logits[0].float(), -1)
        for i, source in enumerate(t.sources):
            if source != Source.MODEL or i == 0:
                continue
            model_tokens += 1
            d = draft(t.tokens, i, ngram)
            if d is not None:
                drafted += 1
                accept += probs[i - 1, d].item()
                same += int(d == t.tokens[i])
    return {"rollouts": len(trajs), "model_tokens": model_tokens, "with_draft": drafted / model_tokens,
            "p_accept": accept / max(drafted, 1), "p_accept_per_token": accept / model_tokens,
            "draft_is_sampled": same / max(drafted, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--run", type=Path, default=Path("runs/quickstart"), help="a finished run directory")
    ap.add_argument("--steps", type=int, nargs="+", default=[0, 9], help="rollout steps to score")
    ap.add_argument("--rows", type=int, default=48, help="rollouts scored per step")
    ap.add_argument("--ngram", type=int, default=3, help="longest context suffix looked up")
    args, env = parse_and_setup(ap)
    cfg = load_config(args.run / "config.yaml", [])
    start, _ = resolve_model(cfg.model.path, log=lambda *_: None)
    rows = []
    for step in args.steps:
        weights = start if step == 0 else latest_checkpoint(args.run / "checkpoints")
        rollouts = args.run / "rollouts" / f"step_{step:06d}.jsonl.gz"
        if weights is None or not rollouts.is_file():
            raise SystemExit(f"{args.run}: no {'checkpoint' if weights is None else rollouts.name} to score step {step}")
        model = AutoModelForCausalLM.from_pretrained(weights, dtype=torch.float32).eval()
        row = {"step": step, "scored_by": "start" if step == 0 else "latest checkpoint"}
        row.update(acceptance(model, rollouts, args.rows, args.ngram))
        rows.append(row)
        print(f"  step {step}: p(accept) {row['p_accept']:.3f} over {row['with_draft']:.0%} of model tokens",
              flush=True)
    print("\n" + markdown_table(rows, ["step", "scored_by", "rollouts", "model_tokens", "with_draft", "p_accept",
                                       "p_accept_per_token", "draft_is_sampled"]))
    write_json(args.json, {"env": env, "args": {k: str(v) for k, v in vars(args).items()}, "rows": rows})


if __name__ == "__main__":
    main()
