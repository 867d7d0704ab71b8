"""Shared helpers for the benchmarks: offline, thread-pinned setup, timing and markdown tables."""

from __future__ import annotations

import json
import os
import platform
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Import juncture from this checkout even where the editable install resolves it as a
# namespace package (then importlib.resources cannot find the packaged configs).
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402


def setup(threads: int = 2, seed: int = 0) -> None:
    """Pin torch to `threads` cores (the 2-core CPU target) and seed everything."""
    torch.set_num_threads(threads)
    torch.manual_seed(seed)


def parse_and_setup(ap, seed: bool = False):
    """Add the options every benchmark shares (--threads, --json; --seed with `seed`), parse, `setup`;
    returns (args, environment())."""
    if seed:
        ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", help="write results to this JSON file")
    args = ap.parse_args()
    setup(args.threads, args.seed if seed else 0)
    return args, environment()


def environment() -> dict:
    import transformers

    env = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "threads": torch.get_num_threads(),
        "cpu": platform.processor() or platform.machine(),
        "load_avg_1m": os.getloadavg()[0],
    }
    try:
        import trl

        env["trl"] = trl.__version__
    except ImportError:
        pass
    return env


def timed(fns: dict, repeats: int, warmup: int = 1, device: torch.device | None = None,
          stat=min) -> dict[str, tuple[float, object]]:
    """{name: (`stat` of the wall times, last result)} over `repeats` calls of each fn, after `warmup` untimed calls.

    The fns are interleaved (a, b, a, b, ...) so a burst of load from other processes hits
    both; the default keeps the best time, because interference only ever adds time. On a CUDA
    `device` every call is bracketed by a synchronize, so its time covers the kernels it queued.
    """

    def sync() -> None:
        if device is not None and device.type == "cuda":
            torch.cuda.synchronize(device)

    for _ in range(warmup):
        for fn in fns.values():
            fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    last = dict.fromkeys(fns)
    for _ in range(repeats):
        for name, fn in fns.items():
            sync()
            t0 = time.perf_counter()
            last[name] = fn()
            sync()
            times[name].append(time.perf_counter() - t0)
    return {name: (stat(ts), last[name]) for name, ts in times.items()}


def markdown_table(rows: list[dict], columns: list[str]) -> str:
    def fmt(v):
        return f"{v:.2f}" if isinstance(v, float) else str(v)

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(fmt(r.get(c, "")) for c in columns) + " |" for r in rows]
    return "\n".join(lines)


def write_json(path: str | None, payload: dict, quiet: bool = False) -> None:
    if path:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(json.dumps(payload, indent=2) + "\n")
        if not quiet:
            print(f"wrote {path}")
