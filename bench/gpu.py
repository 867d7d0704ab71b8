"""Issue 8's numbers on a GPU, in one process: rollouts, branches, updates, a GRPO step and MFU.

Why: the lent GPU machine cannot download a model and takes at most 64 MiB per call, so the
models are random-weight Llamas built from SmolLM2's configs (135M, and 1.7B for a size that
loads a GPU); speed depends on the architecture and the token counts, not on the weights.
EOS is disabled in the generation benchmarks (random weights would stop at random places).

    python bench/gpu.py [--models smollm2-135m smollm2-1.7b] [--batch-sizes 8 32 64]
        [--new-tokens 128] [--grpo-steps 3] [--out runs/bench/gpu] [--smoke]

`--smoke` runs every part with a tiny model and tiny sizes (on the CPU too), to test the script.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch
from common import environment, markdown_table, setup, write_json

ARCHS = {  # SmolLM2's published configs (the 135M one is the packaged model's)
    "smollm2-135m": dict(hidden_size=576, intermediate_size=1536, num_hidden_layers=30, num_attention_heads=9,
                         num_key_value_heads=3, head_dim=64),
    "smollm2-1.7b": dict(hidden_size=2048, intermediate_size=8192, num_hidden_layers=24, num_attention_heads=32,
                         num_key_value_heads=32, head_dim=64),
    "tiny": dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2, head_dim=16),
}
TOKENIZER = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "smollm2_tokenizer"


def random_model(arch: str, root: Path) -> Path:
    """A random-weight Llama with SmolLM2's tokenizer, saved as an HF model directory."""
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from juncture.policy.hf import resolve_device

    target = root / arch
    cfg = LlamaConfig(vocab_size=49152, max_position_embeddings=8192, tie_word_embeddings=True, bos_token_id=1,
                      eos_token_id=2, pad_token_id=2, **ARCHS[arch])
    torch.manual_seed(0)
    with resolve_device("auto"):
        model = LlamaForCausalLM(cfg).to(torch.bfloat16)  # bf16 on disk: half the bytes; loaded as fp32
    model.save_pretrained(target)
    AutoTokenizer.from_pretrained(TOKENIZER).save_pretrained(target)
    return target


def rollouts(model_dir: Path, arch: str, args) -> list[dict]:
    from throughput import bench_rollout

    from juncture.config import ModelConfig
    from juncture.policy.hf import HFPolicy

    policy = HFPolicy.load(ModelConfig(path=str(model_dir), dtype="bfloat16"), log=lambda *_: None)
    rows = []
    for b in args.batch_sizes:
        rows.append({"model": arch, **bench_rollout(policy, "bfloat16", b, args.new_tokens, args.repeats)})
    return rows


def branches(model_dir: Path, arch: str, args) -> list[dict]:
    import branch_cost

    from juncture.config import ModelConfig
    from juncture.policy.hf import HFPolicy

    policy = HFPolicy.load(ModelConfig(path=str(model_dir), dtype="bfloat16"), log=lambda *_: None)
    ns = argparse.Namespace(prefix_len=args.prefix_len, new_tokens=args.new_tokens, fresh_prompt_len=64,
                            skip_fresh=False, skip_next_turn=False, repeats=args.repeats)
    return [{"model": arch, **{k: v for k, v in r.items() if k != "times"}}
            for r in branch_cost.bench(policy, "bfloat16", 8, ns)]


def updates(model_dir: Path, arch: str, args) -> list[dict]:
    import packed_update

    ns = argparse.Namespace(model=str(model_dir), prompts=4, initial=4, branches=4, response_len=args.response_len,
                            tool_len=12, micro_batch=16, updates_per_step=1, repeats=args.repeats, rollouts=None)
    with tempfile.TemporaryDirectory() as run_dir:
        return [{"model": arch, **r} for r in packed_update.bench("bfloat16", ns, run_dir)]


def grpo_steps(model_dir: Path, arch: str, args) -> dict:
    """Wall time of juncture's full GRPO step (rollout, reward, credit, update, weight sync)."""
    from trl_compare import make_config

    from juncture.config import apply_overrides
    from juncture.policy.backends import load_policy
    from juncture.tasks import build_tasks
    from juncture.train.rl import Trainer

    ns = argparse.Namespace(dtype="bfloat16", max_tokens=args.new_tokens, group=8, prompts=args.grpo_prompts,
                            lr=1e-6, seed=0)
    cfg = make_config(ns)
    overrides = [f"model.path={model_dir}", "model.vllm.max_model_len=2048", *args.grpo_set]
    cfg = type(cfg).model_validate(apply_overrides(cfg.model_dump(), overrides))
    train_tasks, _ = build_tasks(cfg.task)
    policy = load_policy(cfg.model, log=lambda *_: None)
    with tempfile.TemporaryDirectory() as run_dir:
        trainer = Trainer(cfg, policy, {}, train_tasks, Path(run_dir))
        times, rollout, tokens = [], [], []
        for step in range(args.grpo_steps + 1):  # step 0 warms up
            t0 = time.perf_counter()
            m = trainer.train_step(step)
            if step:
                times.append(time.perf_counter() - t0)
                rollout.append(m["time/rollout_s"])
                tokens.append(m["rollout/new_tokens"])
    step_s = statistics.median(times)
    return {"model": arch, "config": " ".join(args.grpo_set) or "defaults", "rows": args.grpo_prompts * 8,
            "steps": len(times), "step_s": step_s,
            "rollout_s": statistics.median(rollout), "update_s": step_s - statistics.median(rollout),
            "gen_tokens": statistics.median(tokens), "gen_tok_s": sum(tokens) / sum(times)}


def mfu(model_dir: Path, arch: str, args) -> list[dict]:
    import flops

    ns = argparse.Namespace(rows=args.mfu_rows, prompt_len=64, response_len=args.response_len,
                            peak_size=args.peak_size, repeats=args.repeats)
    return [{"model": arch, **r} for r in flops.measure(str(model_dir), "auto", ["float32", "bfloat16"], ns)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", nargs="+", default=["smollm2-135m", "smollm2-1.7b"], choices=sorted(ARCHS))
    ap.add_argument("--batch-sizes", type=int, nargs="+", default=[8, 32, 64])
    ap.add_argument("--new-tokens", type=int, default=128)
    ap.add_argument("--prefix-len", type=int, default=512)
    ap.add_argument("--response-len", type=int, default=160)
    ap.add_argument("--grpo-steps", type=int, default=3)
    ap.add_argument("--grpo-prompts", type=int, default=8)
    ap.add_argument("--mfu-rows", type=int, default=16)
    ap.add_argument("--peak-size", type=int, default=8192)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--grpo-set", nargs="*", default=[], metavar="KEY=VALUE",
                    help="overrides of the GRPO steps' config, e.g. model.backend=vllm model.vllm.scores=engine")
    ap.add_argument("--parts", nargs="+", default=["mfu", "rollout", "branch", "update", "grpo"])
    ap.add_argument("--out", default="runs/bench/gpu")
    ap.add_argument("--smoke", action="store_true")
    args = ap.parse_args()
    if args.smoke:
        args.models, args.batch_sizes, args.new_tokens, args.prefix_len = ["tiny"], [2], 8, 200
        args.response_len, args.grpo_steps, args.grpo_prompts, args.mfu_rows = 16, 1, 1, 2
        args.peak_size, args.repeats = 256, 1
    setup(threads=torch.get_num_threads())
    env = environment()
    if torch.cuda.is_available():
        env["gpu"] = torch.cuda.get_device_name()
    results: dict = {"env": env, "args": vars(args)}
    out = Path(args.out)
    parts = {"mfu": mfu, "rollout": rollouts, "branch": branches, "update": updates, "grpo": grpo_steps}
    with tempfile.TemporaryDirectory() as root:
        for arch in args.models:
            model_dir = random_model(arch, Path(root))
            for name in args.parts:
                t0 = time.perf_counter()
                print(f"== {arch} {name}", flush=True)
                res = parts[name](model_dir, arch, args)
                results.setdefault(name, []).extend(res if isinstance(res, list) else [res])
                print(f"   ({time.perf_counter() - t0:.0f} s)", flush=True)
                write_json(str(out / "gpu.json"), results, quiet=True)
    print(f"\n{env.get('gpu', 'no GPU')}, torch {env['torch']}, transformers {env['transformers']}\n")
    columns = {
        "mfu": ["model", "dtype", "rows", "tokens", "update_s", "train_tflops", "matmul_peak_tflops", "mfu"],
        "rollout": ["model", "batch", "prompt_len", "hf_tok_s", "juncture_tok_s", "ratio"],
        "branch": ["model", "case", "prompt_len", "new_tokens_per_row", "prefill_s", "total_s", "vs_a"],
        "update": ["model", "packing", "rows", "update_s", "vs_flat", "fed_tokens", "trained_tok_s", "loss"],
        "grpo": ["model", "config", "rows", "steps", "step_s", "rollout_s", "update_s", "gen_tokens", "gen_tok_s"],
    }
    for name in args.parts:
        print(f"{name}:\n{markdown_table(results[name], columns[name])}\n")
    write_json(str(out / "gpu.json"), results)


if __name__ == "__main__":
    main()
