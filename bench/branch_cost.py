"""What a branch costs: continuing B branches from one long shared prefix, with and without prefix reuse.

Why: branching only pays if a branch is much cheaper than a fresh rollout. A branch's
prompt is its parent's prompt+response up to the fork (hundreds of tokens), shared by all B
branches forked there. On SmolLM2-135M-Instruct this times a `new_tokens` continuation of B
branches from a `prefix_len`-token prefix:

  (a) re-encoding the prefix in every row (the plain padded prefill, `prefix_reuse=False`);
  (b) encoding it once in the call (shared-prefix prefill and decoding, KV store empty);
  (b+) with the parent's KV kept by the KV store from the call that generated the parent;
  (c) a fresh rollout: B rows generating the whole response from a short prompt, to the same length;
and the agent loop's next turn, each row's prompt = prefix + its (b) response + a tool result:
  (d) re-encoding each row's history (store empty), (e) with the KV store from the (b) call.

EOS is disabled so every row generates exactly its budget; no stop strings. Times are medians
of `--repeats` interleaved runs after an untimed warm-up repetition of every case;
"prefill_s" times the same call with a 1-token budget.

    .venv/bin/python bench/branch_cost.py [--batch 8 ...] [--prefix-len 512] [--new-tokens 128]
        [--fresh-prompt-len 64] [--skip-fresh] [--skip-next-turn] [--bounds] [--dtypes float32 bfloat16]
        [--repeats 3] [--json runs/bench/branch_cost.json]

Several `--batch` sizes give the speed-up as a function of B: (a)/(b+) is about
1 + prefill / (steps x decode step), and a decode step is bound by reading the weights, which B
rows share, while the re-encoded prefill grows with B.

`--bounds` also gives the most (a)/(b+) could be on this machine. Decoding B rows cannot take
less than multiplying B token vectors by every weight matrix. This times exactly those products
(the fused decoder's own weights and kernels; no attention, no other op) and a plain read of
every weight, and puts each in place of the decode step:

  bound_products = 1 + prefill / (steps x products)   (this machine's matrix-product kernels)
  bound_read     = 1 + prefill / (steps x read)       (a kernel that streams the weights at memory speed)
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections import OrderedDict

import torch
from common import markdown_table, parse_and_setup, timed, write_json

from juncture.agent.loop import encode_prompt
from juncture.agent.protocol import result_text
from juncture.config import ModelConfig, load_config
from juncture.policy.base import SamplingParams
from juncture.policy.hf import HFPolicy
from juncture.tasks import build_tasks

PARAMS = SamplingParams(temperature=1.0)
TOOL_RESULT = result_text("42")


def parent_sequence(policy: HFPolicy, length: int) -> list[int]:
    """A real quickstart prompt (few-shot, python tool) followed by a sampled response, `length` tokens in all."""
    cfg = load_config(None, ["task.train_size=4", "task.eval_size=1"])
    train, _ = build_tasks(cfg.task)
    prompt = encode_prompt(policy.tokenizer, train[0], cfg.agent.tools, cfg.agent.prompt)
    if len(prompt) >= length:
        return prompt[:length]
    gen = policy.generate([prompt], [length - len(prompt)], PARAMS, torch.Generator().manual_seed(0))[0]
    return prompt + gen.tokens


def run(policy: HFPolicy, prompts: list[list[int]], new_tokens: int, reuse: bool, seed: int):
    policy.prefix_reuse = reuse
    t0 = time.perf_counter()
    outs = policy.generate(prompts, [new_tokens] * len(prompts), PARAMS, torch.Generator().manual_seed(seed))
    return time.perf_counter() - t0, outs


def step_products(policy: HFPolicy, rows: int):
    """One decode step's matrix products for `rows` rows, with the weights and kernels the fused decoder uses."""
    decoder, config, dtype = policy.fused_decoder, policy.gen_model.config, policy.gen_model.dtype
    hidden, attended = config.hidden_size, decoder.heads * decoder.head_dim
    shapes = [(decoder.lm_head, decoder.lm_head_bias, hidden)]  # (weight, bias, input width)
    for layer in decoder.layers:
        shapes += [(layer.qkv, layer.qkv_bias, hidden), (layer.o, layer.o_bias, attended),
                   (layer.gate_up, None, hidden), (layer.down, None, config.intermediate_size)]
    products = [(w, bias, torch.randn(rows, width, dtype=dtype)) for w, bias, width in shapes]

    def step():
        for w, bias, x in products:
            decoder._linear(w, bias, x)
    return step


def weight_read(policy: HFPolicy):
    """A function reading every weight of the sampling model once (tied ones once), and the bytes it reads."""
    params = list({p.data_ptr(): p.detach() for p in policy.gen_model.parameters()}.values())
    return (lambda: [p.sum() for p in params]), sum(p.numel() * p.element_size() for p in params)


def bounds(policy: HFPolicy, dtype: str, b: int, rows: list[dict], args) -> dict:
    """(a)/(b+) as measured, and with a decode step of nothing but its weight products or a read of the weights."""
    case = {r["case"][:4]: r for r in rows}
    a, b_plus = case["(a) "], case["(b+)"]
    read, nbytes = weight_read(policy)
    with torch.inference_mode():
        best = timed({"products": step_products(policy, b), "read": read}, repeats=20)
    products_s, read_s = best["products"][0], best["read"][0]
    steps = args.new_tokens - 1
    return {
        "dtype": dtype, "batch": b, "a_prefill_s": a["prefill_s"], "a_total_s": a["total_s"],
        "b_plus_total_s": b_plus["total_s"], "measured": b_plus["vs_a"],
        "decode_ms_per_step": b_plus["decode_ms_per_step"], "products_ms": 1e3 * products_s, "read_ms": 1e3 * read_s,
        "read_GB_s": nbytes / read_s / 1e9, "bound_products": 1 + a["prefill_s"] / (steps * products_s),
        "bound_read": 1 + a["prefill_s"] / (steps * read_s),
    }


def bench(policy: HFPolicy, dtype: str, b: int, args) -> list[dict]:
    store = policy.kv_store
    policy.eos_ids = set()  # every row generates exactly its budget
    parent = parent_sequence(policy, args.prefix_len)
    tool = policy.tokenizer.encode(TOOL_RESULT, add_special_tokens=False)
    fresh_new = args.prefix_len + args.new_tokens - args.fresh_prompt_len
    times: dict[str, list[float]] = {}
    prefill: dict[str, list[float]] = {}
    info: dict[str, tuple[int, int]] = {}  # case: (prompt length, tokens generated per row)

    def restore(entries: OrderedDict | None):
        store.clear()
        for key, kv in (entries or {}).items():
            store.put(key, kv)

    def case(name, prompts, new, reuse, rep, entries=None):
        """Time the call and its prefill alone, each from the same KV-store state; repetition 0 warms up."""
        restore(entries)
        t_prefill = run(policy, prompts, 1, reuse, rep)[0]
        restore(entries)
        t, outs = run(policy, prompts, new, reuse, rep)
        if rep == 0:  # first calls at new shapes pay one-off costs (kernel selection, allocator growth)
            return outs
        prefill.setdefault(name, []).append(t_prefill)
        times.setdefault(name, []).append(t)
        info[name] = (max(map(len, prompts)), sum(len(o.tokens) for o in outs) // len(outs))
        print(f"  {dtype} rep {rep} {name}: {t:.2f} s (prefill {t_prefill:.2f} s)", flush=True)
        return outs

    for rep in range(args.repeats + 1):  # cases interleaved, so load bursts hit all of them
        case("(a) branch, re-encode prefix", [parent] * b, args.new_tokens, False, rep)
        outs = case("(b) branch, shared prefix", [parent] * b, args.new_tokens, True, rep)
        after_b = OrderedDict(store.entries)
        restore(None)
        run(policy, [parent[:-1]], 1, True, rep)  # the parent's own call leaves its KV in the store
        case("(b+) branch, parent KV kept", [parent] * b, args.new_tokens, True, rep, OrderedDict(store.entries))
        if not args.skip_fresh:
            case("(c) fresh rollout", [parent[: args.fresh_prompt_len]] * b, fresh_new, True, rep)
        if args.skip_next_turn:
            continue
        turn2 = [parent + o.tokens + tool for o in outs]
        case("(d) next turn, re-encode history", turn2, args.new_tokens, True, rep)
        case("(e) next turn, KV store", turn2, args.new_tokens, True, rep, after_b)
    rows = []
    base = statistics.median(times["(a) branch, re-encode prefix"])
    for name, ts in times.items():
        t = statistics.median(ts)
        rows.append({
            "dtype": dtype, "case": name, "batch": b, "prompt_len": info[name][0], "new_tokens_per_row": info[name][1],
            "prefill_s": statistics.median(prefill[name]), "total_s": t, "s_per_row": t / b,
            "decode_ms_per_step": 1e3 * (t - statistics.median(prefill[name])) / max(1, info[name][1] - 1),
            "vs_a": base / t,
            "times": ts,
        })
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--batch", type=int, nargs="+", default=[8], help="branches forked at the same point (B)")
    ap.add_argument("--prefix-len", type=int, default=512, help="tokens before the fork, prompt included")
    ap.add_argument("--new-tokens", type=int, default=128, help="tokens each branch generates")
    ap.add_argument("--fresh-prompt-len", type=int, default=64, help="prompt length of the fresh rollout (c)")
    ap.add_argument("--skip-fresh", action="store_true", help="skip the fresh rollout (c), the slowest case")
    ap.add_argument("--skip-next-turn", action="store_true", help="skip the next-turn cases (d) and (e)")
    ap.add_argument("--bounds", action="store_true", help="also the most (a)/(b+) could be here (see above)")
    ap.add_argument("--dtypes", nargs="+", default=["float32", "bfloat16"], choices=["float32", "bfloat16"])
    ap.add_argument("--repeats", type=int, default=3, help="timed repeats (median) after one warm-up")
    args, env = parse_and_setup(ap)
    env["uptime_start"] = os.popen("uptime").read().strip()

    rows, limits = [], []
    for dtype in args.dtypes:
        policy = HFPolicy.load(ModelConfig(path="default", dtype=dtype), log=lambda *_: None)
        if args.bounds and policy.fused_decoder is None:
            raise SystemExit("--bounds times the fused decoder's products; this model decodes through transformers")
        for b in args.batch:
            cases = bench(policy, dtype, b, args)
            rows += cases
            if args.bounds:
                limits.append(bounds(policy, dtype, b, cases, args))
        del policy

    env["uptime_end"] = os.popen("uptime").read().strip()
    print(f"\nSmolLM2-135M-Instruct, {env['threads']} threads, torch {env['torch']}, transformers "
          f"{env['transformers']}; B={args.batch} rows, median of {args.repeats}.\n"
          f"load: start `{env['uptime_start']}`; end `{env['uptime_end']}`\n")
    print(markdown_table(rows, ["dtype", "case", "batch", "prompt_len", "new_tokens_per_row", "prefill_s", "total_s",
                                "s_per_row", "decode_ms_per_step", "vs_a"]))
    if limits:
        print("\n" + markdown_table(limits, ["dtype", "batch", "a_prefill_s", "a_total_s", "b_plus_total_s", "measured",
                                             "decode_ms_per_step", "products_ms", "read_ms", "read_GB_s",
                                             "bound_products", "bound_read"]))
    write_json(args.json, {"env": env, "args": vars(args), "rows": rows, "bounds": limits})


if __name__ == "__main__":
    main()
