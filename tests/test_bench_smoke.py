"""bench/gpu.py --smoke runs every part of the GPU benchmark on a tiny model (on the CPU here), so the
script the lent GPU runs cannot drift from the benchmarks it calls without failing here first."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1] / "bench"


def test_gpu_benchmark_smoke(tmp_path):
    out = tmp_path / "gpu"
    subprocess.run([sys.executable, str(BENCH / "gpu.py"), "--smoke", "--out", str(out)], check=True,
                   cwd=BENCH, capture_output=True, text=True, timeout=300)
    results = json.loads((out / "gpu.json").read_text())
    assert {r["dtype"] for r in results["mfu"]} == {"float32", "bfloat16"}
    assert all(r["mfu"] > 0 for r in results["mfu"])
    assert [r["ratio"] > 0 for r in results["rollout"]] == [True]
    assert {r["case"][:4] for r in results["branch"]} >= {"(a) ", "(b) ", "(b+)", "(c) "}
    assert [r["packing"] for r in results["update"]] == ["flat", "tree"]
    assert results["update"][1]["fed_tokens"] < results["update"][0]["fed_tokens"]
    (grpo,) = results["grpo"]
    assert grpo["config"] == "defaults" and grpo["gen_tokens"] > 0 and grpo["step_s"] > grpo["rollout_s"] > 0
