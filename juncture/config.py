"""Typed run configuration: YAML files plus `dotted.key=value` overrides, validated by pydantic.

Every knob has a default that runs the CPU quickstart. Unknown keys are errors, so a typo
never silently falls back to a default.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator


class ConfigError(ValueError):
    """A config file or override is invalid; the message names the key."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class ModelConfig(_Section):
    path: str = Field("default", description="'default' (packaged SmolLM2), an HF model directory, or a .gguf file")
    dtype: Literal["float32", "bfloat16"] = "float32"
    gradient_checkpointing: bool = False


class SamplingConfig(_Section):
    temperature: float = Field(1.0, gt=0)
    top_p: float = Field(1.0, gt=0, le=1)
    top_k: int = Field(0, ge=0, description="0 disables top-k")


class AgentConfig(_Section):
    prompt: str = Field("fewshot", description="prompt template: 'fewshot' or 'plain', or a path to a .txt template")
    tools: list[str] = Field(default_factory=lambda: ["python"], description="tool tags the agent may call")
    max_turns: int = Field(4, ge=1, description="model turns (generation calls) per trajectory")
    max_tool_calls: int = Field(2, ge=0, description="tool calls per trajectory, counted in the response only")
    max_new_tokens: int = Field(256, ge=1, description="model-generated tokens per trajectory, all turns together")
    max_turn_tokens: int = Field(128, ge=1, description="model-generated tokens per turn")
    max_tool_result_tokens: int = Field(128, ge=8, description="tool output is cut to this many tokens")


class PythonToolConfig(_Section):
    timeout_s: float = Field(5.0, gt=0)
    memory_mb: int = Field(512, ge=32)
    max_processes: int = Field(16, ge=1)
    max_output_chars: int = Field(2000, ge=64)


class SearchToolConfig(_Section):
    corpus: str = Field("wiki", description="'wiki' (packaged Wikipedia summaries) or a JSONL file of {title, text}")
    top_k: int = Field(3, ge=1)
    max_chars_per_doc: int = Field(300, ge=32)


class ToolsConfig(_Section):
    python: PythonToolConfig = PythonToolConfig()
    search: SearchToolConfig = SearchToolConfig()


class TaskConfig(_Section):
    name: str = Field("reasoning_gym:chain_sum", description="'reasoning_gym:<generator>', 'wiki_qa', 'toy:even_tokens', or 'file'")
    params: dict[str, Any] = Field(default_factory=dict, description="generator keyword arguments")
    path: str | None = Field(None, description="JSONL/Parquet file for name=file")
    verifier: Literal["auto", "math", "exact_match", "f1"] = "auto"
    train_size: int = Field(1000, ge=1)
    eval_size: int = Field(32, ge=1)
    seed: int = 0


class RewardConfig(_Section):
    correct_weight: float = 1.0
    format_weight: float = Field(0.1, description="added when the answer tag is present and tool tags are well formed")
    invalid_format_reward: float = Field(0.0, description="reward when no <answer> is given")


class AlgorithmConfig(_Section):
    branching: str = "none"
    credit: str = "grpo"
    group_size: int = Field(4, ge=1, description="rollouts per prompt")
    norm_adv_by_std: bool = True


class LossConfig(_Section):
    clip_low: float = Field(0.2, ge=0)
    clip_high: float = Field(0.28, ge=0)
    dual_clip_c: float | None = Field(None, gt=1, description="dual-clip constant for negative advantages; null disables")
    agg: Literal["token-mean", "seq-mean-token-mean", "seq-mean-token-sum-norm"] = "token-mean"
    kl_coef: float = Field(0.0, ge=0, description="k3 KL to the frozen initial policy; 0 skips the reference model")
    entropy_coef: float = 0.0


class OptimConfig(_Section):
    lr: float = Field(1e-5, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    betas: tuple[float, float] = (0.9, 0.999)
    grad_clip: float = Field(1.0, gt=0)
    warmup_steps: int = Field(0, ge=0)


class TrainConfig(_Section):
    steps: int = Field(8, ge=0)
    prompts_per_step: int = Field(4, ge=1)
    micro_batch_size: int = Field(4, ge=1, description="rows per forward/backward; gradients accumulate")
    updates_per_step: int = Field(1, ge=1, description="optimizer steps (mini-batches) per rollout batch")
    seed: int = 0
    save_every: int = Field(1, ge=1)
    keep_checkpoints: int = Field(2, ge=1)


class SFTConfig(_Section):
    enabled: bool = False
    data: str | None = Field(None, description="JSONL of demonstrations; null generates them for the task")
    num_demos: int = Field(64, ge=1)
    steps: int = Field(30, ge=0)
    batch_size: int = Field(8, ge=1)
    lr: float = Field(5e-5, gt=0)


class EvalConfig(_Section):
    before: bool = True
    after: bool = True
    temperature: float = Field(0.0, ge=0, description="0 = greedy")
    samples: int = Field(1, ge=1)


class LoggingConfig(_Section):
    progress: bool = True
    tensorboard: bool = False
    wandb: bool = False
    wandb_project: str = "juncture"


class RunConfig(_Section):
    run_dir: str = "runs/quickstart"
    model: ModelConfig = ModelConfig()
    sampling: SamplingConfig = SamplingConfig()
    agent: AgentConfig = AgentConfig()
    tools: ToolsConfig = ToolsConfig()
    task: TaskConfig = TaskConfig()
    reward: RewardConfig = RewardConfig()
    algorithm: AlgorithmConfig = AlgorithmConfig()
    loss: LossConfig = LossConfig()
    optim: OptimConfig = OptimConfig()
    train: TrainConfig = TrainConfig()
    sft: SFTConfig = SFTConfig()
    eval: EvalConfig = EvalConfig()
    logging: LoggingConfig = LoggingConfig()

    @model_validator(mode="after")
    def _check(self) -> RunConfig:
        if self.task.name == "file" and not self.task.path:
            raise ValueError("task.path is required when task.name=file")
        if self.agent.max_turn_tokens > self.agent.max_new_tokens:
            raise ValueError("agent.max_turn_tokens must be <= agent.max_new_tokens")
        return self


def _set_dotted(tree: dict, key: str, value: Any) -> None:
    parts = key.split(".")
    node = tree
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"override {key}: {part!r} is not a section")
        node = child
    node[parts[-1]] = value


def parse_overrides(overrides: list[str]) -> dict:
    tree: dict = {}
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not of the form key=value")
        key, raw = item.split("=", 1)
        if not key.strip():
            raise ConfigError(f"override {item!r} has an empty key")
        try:
            value = yaml.safe_load(raw) if raw != "" else ""
        except yaml.YAMLError as e:
            raise ConfigError(f"override {key}: cannot parse value {raw!r}: {e}") from e
        _set_dotted(tree, key.strip(), value)
    return tree


def _merge(base: dict, extra: dict) -> dict:
    out = dict(base)
    for k, v in extra.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def _format_error(err: ValidationError, source: str) -> str:
    lines = [f"invalid config ({source}):"]
    for e in err.errors():
        key = ".".join(str(p) for p in e["loc"]) or "(top level)"
        got = f" (got {e['input']!r})" if "input" in e and not isinstance(e["input"], dict) else ""
        msg = "unknown key" if e["type"] == "extra_forbidden" else e["msg"]
        lines.append(f"  {key}: {msg}{got}")
    return "\n".join(lines)


def read_yaml(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"config file {path} is not valid YAML: {e}") from e
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping at the top level")
    return data


def builtin_config(name: str) -> Path:
    return Path(__file__).parent / "configs" / f"{name}.yaml"


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> RunConfig:
    """Load `path` (default: the packaged quickstart) and apply `key=value` overrides."""
    path = builtin_config("quickstart") if path is None else Path(path)
    data = _merge(read_yaml(path), parse_overrides(overrides or []))
    try:
        return RunConfig.model_validate(data)
    except ValidationError as e:
        raise ConfigError(_format_error(e, f"{path} + overrides" if overrides else str(path))) from None


def dump_config(cfg: RunConfig) -> str:
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)
