"""One AdamW step on SmolLM2-135M-Instruct's parameters (fp32 master weights): fused vs the defaults.

Why: the trainer's optimizer step touches every parameter and two state tensors per parameter;
torch's default AdamW (foreach) makes about ten passes over them, the fused kernel one
(`juncture/train/optim.py`). Timed interleaved, best of `--repeats`, after one warm-up step
that also allocates the state.

    .venv/bin/python bench/optimizer_step.py [--repeats 5] [--json runs/bench/optimizer_step.json]
"""

from __future__ import annotations

import argparse

import torch
from common import environment, markdown_table, setup, timed, write_json
from transformers import AutoModelForCausalLM

from juncture.policy.loading import resolve_model
from juncture.train.optim import adamw

VARIANTS = {"fused (juncture)": None, "foreach (torch default)": {"foreach": True}, "for-loop": {"foreach": False}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", help="write results to this JSON file")
    args = ap.parse_args()
    setup(args.threads)
    path, _ = resolve_model("default", log=lambda *a: None)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    params = list(model.parameters())
    for p in params:
        p.grad = torch.randn_like(p) * 1e-3
    optimizers = {name: adamw(params, lr=1e-5) if kw is None else torch.optim.AdamW(params, lr=1e-5, **kw)
                  for name, kw in VARIANTS.items()}
    times = timed({name: opt.step for name, opt in optimizers.items()}, args.repeats)
    base = times["foreach (torch default)"][0]
    rows = [{"optimizer": name, "s": t, "speed-up vs foreach": base / t} for name, (t, _) in times.items()]
    print(f"\nAdamW step over {sum(p.numel() for p in params) / 1e6:.0f}M fp32 parameters, "
          f"{args.threads} threads, best of {args.repeats}:\n")
    print(markdown_table(rows, ["optimizer", "s", "speed-up vs foreach"]))
    write_json(args.json, {"environment": environment(), "rows": rows})


if __name__ == "__main__":
    main()
