"""Carry vLLM to the offline GPU machine: the minimal wheel set of vllm 0.25.0, in parts of at most 56 MiB.

Why: the lent GPU machine (Python 3.12, torch 2.11.0+cu130, transformers 5.17.0, numpy and
huggingface-hub 1.x preinstalled) cannot download, and at most 64 MiB travels per call, working tree
included. vllm 0.25.0 is the release that pins torch 2.11.0 (0.27-0.31 pin 2.13, 0.33 pins 2.14) and is
built for CUDA 13. Its whole dependency closure, torch's own tree left out, is 168 wheels, 1,484 MiB;
offline generation with a Llama model needs 69 of them, 327 MiB (6 calls): vllm, the structured-output
libraries it imports at start-up (xgrammar, llguidance) and the small pure-Python rest. Left out: what the machine
has in versions that work (numpy; transformers 5.17.0, which vLLM accepts from 5.5.3; huggingface-hub,
which must stay below 2.0 for that transformers), flashinfer (~800 MiB with its CUDA toolchain wheels;
vLLM then needs `VLLM_USE_FLASHINFER_SAMPLER=0`, which juncture's vllm backend sets where flashinfer is
missing), multimodal, quantization and server-only packages. Run on an H100 in the eighth session:
tests/test_policy_vllm.py passed and bench/vllm_rollout.py ran (docs/benchmarks.md, "On a GPU").

Here (run with Python 3.12: dependency markers are evaluated for the running interpreter):

    python3.12 bench/vllm_wheels.py --out .whl/vllm      # parts .whl/vllm/part-00 ... and SHA256SUMS

On the GPU machine, one `run` call per part (`carry: [".whl/vllm/part-NN"]`, each copied to /tmp/vp at
once; the machine stays warm only about 30 s between calls), the last with SHA256SUMS, then:

    (cd /tmp/vp && sha256sum -c SHA256SUMS) && mkdir -p /tmp/vw && cat /tmp/vp/part-* | tar -x -C /tmp/vw
    python3 -m pip install -q --no-index --no-deps --target /tmp/site /tmp/vw/*.whl
    export PYTHONPATH=/tmp/site:.   # plus math-verify's three wheels for juncture itself

Then `python3 -m pytest tests/test_policy_vllm.py` (both `model.vllm.scores` modes) and
`bench/vllm_rollout.py --model DIR` with a random-weight model from bench/gpu.py's random_model.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

VLLM = "vllm==0.25.0"
# manylinux tags from 2_5 to 2_31: pip does not extend a --platform to the older tags it implies
PLATFORMS = ["manylinux1_x86_64", "manylinux2010_x86_64", "manylinux2014_x86_64",
             *(f"manylinux_2_{minor}_x86_64" for minor in range(5, 32)), "linux_x86_64"]
# what offline generation with a Llama model imports, less what the GPU machine has (and the few it may
# need: sentencepiece for tokenizer.model-only models, protobuf, blake3 for prefix-cache hashing,
# setuptools < 81 for vllm on 3.12)
MINIMAL = [
    "vllm", "xgrammar", "apache-tvm-ffi", "llguidance", "einops", "tokenizers", "safetensors", "hf-xet",
    "httpx2", "httpcore2", "h11", "anyio", "sniffio", "idna", "certifi", "pillow", "aiohttp",
    "aiohappyeyeballs", "aiosignal", "attrs", "frozenlist", "multidict", "propcache", "yarl", "cachetools",
    "cbor2", "cloudpickle", "py-cpuinfo", "fastapi", "starlette", "annotated-doc", "pydantic",
    "pydantic-core", "annotated-types", "typing-inspection", "msgspec", "openai", "jiter", "openai-harmony",
    "packaging", "partial-json-parser", "prometheus-client", "psutil", "pybase64", "regex", "requests",
    "urllib3", "charset-normalizer", "tqdm", "uvloop", "pyyaml", "pyzmq", "setproctitle", "depyf", "astor",
    "dill", "six", "typer", "click", "rich", "pygments", "markdown-it-py", "mdurl", "shellingham",
    "truststore", "setuptools", "sentencepiece", "protobuf", "blake3",
]
PART_BYTES = 56 << 20  # a part and the working tree (about 6 MiB) within the 64 MiB a call carries
TARGET = ["--python-version", "3.12", "--implementation", "cp", "--only-binary=:all:",
          *(a for p in PLATFORMS for a in ("--platform", p))]


def canonical(name: str) -> str:
    return name.lower().replace("_", "-").replace(".", "-")


def pip(*args: str) -> None:
    cmd = [sys.executable, "-m", "pip", "--isolated", "--disable-pip-version-check", *args]
    subprocess.run(cmd, check=True)


def resolve(work: Path) -> dict[str, str]:
    """{name: version} of vllm's dependency closure for cp312 on x86_64 manylinux (nothing installed)."""
    report = work / "report.json"
    pip("install", "--dry-run", "--ignore-installed", "--quiet", "--report", str(report), "--target", str(work / "t"),
        *TARGET, VLLM)
    return {canonical(i["metadata"]["name"]): i["metadata"]["version"] for i in json.loads(report.read_text())["install"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, required=True, help="folder for part-NN files and SHA256SUMS")
    args = ap.parse_args()
    if sys.version_info[:2] != (3, 12):
        sys.exit(f"run this with Python 3.12 (the GPU machine's), not {sys.version.split()[0]}: dependency "
                 "markers such as python_version > '3.11' are evaluated for the running interpreter")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        closure = resolve(work)
        missing = [n for n in map(canonical, MINIMAL) if n not in closure]
        if missing:
            sys.exit(f"not in {VLLM}'s dependency closure any more: {', '.join(missing)}")
        wheels = work / "wheels"
        pip("download", "--no-deps", "--quiet", "--dest", str(wheels), *TARGET,
            *(f"{n}=={closure[n]}" for n in map(canonical, MINIMAL)))
        files = sorted(wheels.glob("*.whl"))
        archive = work / "wheels.tar"
        with tarfile.open(archive, "w") as tar:
            for f in files:
                tar.add(f, arcname=f.name)
        args.out.mkdir(parents=True, exist_ok=True)
        sums = []
        with archive.open("rb") as src:
            for i, chunk in enumerate(iter(lambda: src.read(PART_BYTES), b"")):
                part = args.out / f"part-{i:02d}"
                part.write_bytes(chunk)
                sums.append(f"{hashlib.sha256(chunk).hexdigest()}  {part.name}")
        (args.out / "SHA256SUMS").write_text("\n".join(sums) + "\n")
        total = sum(f.stat().st_size for f in files)
        print(f"{len(files)} wheels, {total / 2**20:.1f} MiB, in {len(sums)} parts under {args.out}")


if __name__ == "__main__":
    main()
