"""Typed configuration: the three YAML files -> frozen, validated dataclasses.

Every default lives in `config/*.yaml` (shipped inside the package as
`alphazero_llm/defaults`, read through importlib.resources). The entry points
read the config once and pass typed values down; nothing below them opens a
config file. An unknown key, a missing key or a wrong type is a `ConfigError`
that names the file and the dotted key.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Literal

# The config's API includes the schema functions: `ConfigError`, `build`, `override` (re-exported).
from alphazero_llm.schema import ConfigError, build, load_yaml_as, overlay, override, read_yaml  # noqa: F401

MODELS_FILE = "models.yaml"
TEACHERS_FILE = "teacher_models.yaml"
TRAINING_FILE = "training.yaml"


def _require(ok: bool, message: str) -> None:
    if not ok:
        raise ValueError(message)


# --- models.yaml -------------------------------------------------------------


@dataclass(frozen=True)
class StudentConfig:
    name: str
    cpu_name: str
    load_in_4bit: bool
    bnb_4bit_quant_type: Literal["nf4", "fp4"]
    bnb_4bit_compute_dtype: Literal["bfloat16", "float16", "float32"]
    bnb_4bit_use_double_quant: bool
    cpu_dtype: Literal["bfloat16", "float32"]
    max_seq_len: int
    trust_remote_code: bool

    def __post_init__(self) -> None:
        _require(self.max_seq_len > 0, "max_seq_len must be positive")


@dataclass(frozen=True)
class LoraConfig:
    r: int
    alpha: int
    dropout: float
    bias: Literal["none", "all", "lora_only"]
    target_modules: tuple[str, ...]

    def __post_init__(self) -> None:
        _require(self.r > 0, "r must be positive")
        _require(0.0 <= self.dropout < 1.0, "dropout must be in [0, 1)")
        _require(len(self.target_modules) > 0, "target_modules must not be empty")


@dataclass(frozen=True)
class GenerationConfig:
    temperature: float
    top_p: float
    max_new_tokens: int

    def __post_init__(self) -> None:
        _require(self.temperature >= 0.0, "temperature must be >= 0")
        _require(0.0 < self.top_p <= 1.0, "top_p must be in (0, 1]")
        _require(self.max_new_tokens > 0, "max_new_tokens must be positive")


@dataclass(frozen=True)
class VLLMConfig:
    """The optional vLLM engine that samples the search's student steps on a GPU (models/vllm_engine.py)."""

    gpu_memory_utilization: float  # vLLM's share of the GPU; the rest holds the 4-bit student and its training step
    enforce_eager: bool  # no CUDA graphs: starts faster, decodes slower
    quantization: Literal["bitsandbytes"] | None  # None: bf16 base weights (bnb_4bit_compute_dtype)

    def __post_init__(self) -> None:
        _require(0.0 < self.gpu_memory_utilization <= 1.0, "gpu_memory_utilization must be in (0, 1]")


@dataclass(frozen=True)
class ModelsConfig:
    student: StudentConfig
    lora: LoraConfig
    generation: GenerationConfig
    vllm: VLLMConfig


# --- teacher_models.yaml -----------------------------------------------------


@dataclass(frozen=True)
class TeacherModelConfig:
    """One OpenAI-compatible endpoint. `api_key_env` is the *name* of the variable holding the key."""

    name: str
    provider: str
    model: str
    base_url: str
    api_key_env: str
    price_input_per_mtok: float = 0.0
    price_output_per_mtok: float = 0.0

    def __post_init__(self) -> None:
        _require(self.base_url.startswith(("http://", "https://")), "base_url must be an http(s) URL")
        _require(self.price_input_per_mtok >= 0 and self.price_output_per_mtok >= 0, "prices must be >= 0")


@dataclass(frozen=True)
class TerminalCheckerConfig:
    use_llm: bool
    max_tokens: int
    model: TeacherModelConfig

    def __post_init__(self) -> None:
        _require(self.max_tokens > 0, "max_tokens must be positive")


@dataclass(frozen=True)
class RateLimitConfig:
    """A token bucket: `requests_per_minute` sustained, up to `burst` at once."""

    requests_per_minute: float
    burst: int

    def __post_init__(self) -> None:
        _require(self.requests_per_minute > 0, "requests_per_minute must be positive")
        _require(self.burst >= 1, "burst must be >= 1")


@dataclass(frozen=True)
class TeacherClientConfig:
    """How requests to teachers are sent: limits, timeouts and retries (see models/teacher_client.py)."""

    timeout_s: float
    local_timeout_s: float  # the loopback teacher server that train_vllm.py starts (slow on a CPU)
    max_retries: int
    backoff_base_s: float
    backoff_max_s: float
    max_retry_after_s: float
    max_concurrency: int
    disable_after_failures: int
    temperature: float
    rate_limits: dict[str, RateLimitConfig]

    def __post_init__(self) -> None:
        _require(self.timeout_s > 0, "timeout_s must be positive")
        _require(self.local_timeout_s > 0, "local_timeout_s must be positive")
        _require(self.max_retries >= 0, "max_retries must be >= 0")
        _require(0 < self.backoff_base_s <= self.backoff_max_s, "need 0 < backoff_base_s <= backoff_max_s")
        _require(self.max_retry_after_s >= 0, "max_retry_after_s must be >= 0")
        _require(self.max_concurrency > 0, "max_concurrency must be positive")
        _require(self.disable_after_failures >= 0, "disable_after_failures must be >= 0 (0: never)")
        _require(self.temperature >= 0, "temperature must be >= 0")


@dataclass(frozen=True)
class BanditConfig:
    """Softmax over each teacher's smoothed mean value, mixed with uniform exploration (EXP3-style)."""

    temperature: float
    exploration: float
    prior_value: float
    prior_count: float

    def __post_init__(self) -> None:
        _require(self.temperature > 0, "temperature must be positive")
        _require(0.0 <= self.exploration <= 1.0, "exploration must be in [0, 1]")
        _require(self.prior_count >= 0, "prior_count must be >= 0")


@dataclass(frozen=True)
class TeachersConfig:
    default_tier: str
    tiers: dict[str, tuple[TeacherModelConfig, ...]]
    terminal_checker: TerminalCheckerConfig
    client: TeacherClientConfig
    bandit: BanditConfig

    def __post_init__(self) -> None:
        _require(
            self.default_tier in self.tiers,
            f"default_tier {self.default_tier!r} is not one of the tiers {sorted(self.tiers)}",
        )
        for tier, models in self.tiers.items():
            _require(len(models) > 0, f"tier {tier!r} has no models")
            names = [m.name for m in models]
            _require(len(set(names)) == len(names), f"tier {tier!r} repeats a teacher name")

    def tier(self, name: str | None = None) -> tuple[TeacherModelConfig, ...]:
        """The teachers of tier `name` (the default tier when None)."""
        name = self.default_tier if name is None else name
        if name not in self.tiers:
            raise ValueError(f"unknown teacher tier {name!r}; valid tiers: {sorted(self.tiers)}")
        return self.tiers[name]


# --- training.yaml -----------------------------------------------------------


@dataclass(frozen=True)
class DatasetConfig:
    kind: Literal["gsm8k", "svamp"]  # which data set (data.dataset_splits)
    name: str
    config: str
    train_split: str
    eval_split: str
    path: str | None
    num_train_examples: int
    num_dev_examples: int  # drawn from train_split with split_seed; never trained on
    split_seed: int
    num_eval_examples: int
    shuffle: bool

    def __post_init__(self) -> None:
        _require(self.kind in ("gsm8k", "svamp"), f"dataset.kind must be gsm8k or svamp, got {self.kind!r}")
        _require(self.num_train_examples >= -1, "num_train_examples must be -1 (all) or >= 0")
        _require(self.num_dev_examples >= 0, "num_dev_examples must be >= 0")
        _require(self.num_eval_examples >= -1, "num_eval_examples must be -1 (all) or >= 0")


@dataclass(frozen=True)
class EnvironmentConfig:
    """The verifiers environment: the student's system prompt and the rubric's weights (HRE, PRE)."""

    system_prompt: str
    hre_weight: float
    pre_weight: float

    def __post_init__(self) -> None:
        _require(self.hre_weight >= 0 and self.pre_weight >= 0, "reward weights must be >= 0")


@dataclass(frozen=True)
class EvaluationConfig:
    """train_vllm.py's greedy evaluation (training/evaluation.py)."""

    split: Literal["dev", "test"]  # dev while developing; test once per configuration
    max_new_tokens: int

    def __post_init__(self) -> None:
        _require(self.max_new_tokens > 0, "max_new_tokens must be positive")


@dataclass(frozen=True)
class MCTSConfig:
    num_iterations: int
    exploration_constant: float
    selection: Literal["ucb1", "puct"]
    max_depth: int
    tokens_per_expansion: int
    num_right: int
    num_wrong: int
    num_student: int
    parallel_simulations: int
    virtual_loss: float
    rollout: bool
    rollout_tokens: int

    def __post_init__(self) -> None:
        _require(self.num_iterations > 0, "num_iterations must be positive")
        _require(self.exploration_constant >= 0, "exploration_constant must be >= 0")
        _require(self.max_depth > 0, "max_depth must be positive")
        _require(self.tokens_per_expansion > 0, "tokens_per_expansion must be positive")
        _require(
            min(self.num_right, self.num_wrong, self.num_student) >= 0,
            "num_right, num_wrong and num_student must be >= 0",
        )
        _require(self.num_right + self.num_wrong + self.num_student > 0, "an expansion must ask for a step")
        _require(self.parallel_simulations > 0, "parallel_simulations must be positive")
        _require(self.virtual_loss >= 0, "virtual_loss must be >= 0")
        _require(self.rollout_tokens > 0, "rollout_tokens must be positive")


@dataclass(frozen=True)
class RewardsConfig:
    hre_weight: float
    pre_weight: float
    length_penalty: float
    direction_bonus: float
    pre_discount: float
    format_bonus: float = 0.0

    def __post_init__(self) -> None:
        _require(self.hre_weight >= 0 and self.pre_weight >= 0, "reward weights must be >= 0")
        _require(self.length_penalty >= 0, "length_penalty must be >= 0")
        _require(self.format_bonus >= 0, "format_bonus must be >= 0")
        _require(0.0 < self.pre_discount <= 1.0, "pre_discount must be in (0, 1]")


# How the per-token GRPO loss is averaged (`training.grpo.aggregate`, TRL's `loss_type`).
GRPOLossType = Literal["grpo", "bnpo", "dr_grpo"]


@dataclass(frozen=True)
class GRPOConfig:
    beta: float
    clip_epsilon: float
    advantage_clip: float
    entropy_coef: float
    update_ref_every: int
    loss_type: GRPOLossType = "dr_grpo"

    def __post_init__(self) -> None:
        _require(self.beta >= 0, "beta must be >= 0")
        _require(self.clip_epsilon > 0, "clip_epsilon must be positive")
        _require(self.advantage_clip > 0, "advantage_clip must be positive")
        _require(self.update_ref_every >= 0, "update_ref_every must be >= 0 (0: never)")


@dataclass(frozen=True)
class SampleConfig:
    """`--source sample` (plain GRPO, `training.baselines.SampleSource`): answers per question and their length."""

    group_size: int
    max_new_tokens: int

    def __post_init__(self) -> None:
        _require(self.group_size >= 2, "sample.group_size must be >= 2 (GRPO's advantages compare a group)")
        _require(self.max_new_tokens > 0, "sample.max_new_tokens must be positive")


@dataclass(frozen=True)
class LegacyConfig:
    min_reward_threshold: float
    kl_weight: float

    def __post_init__(self) -> None:
        _require(self.kl_weight >= 0, "kl_weight must be >= 0")


@dataclass(frozen=True)
class OptimizerConfig:
    learning_rate: float
    weight_decay: float
    warmup_steps: int
    max_grad_norm: float
    micro_batch_size: int
    gradient_accumulation_steps: int

    def __post_init__(self) -> None:
        _require(self.learning_rate > 0, "learning_rate must be positive")
        _require(self.warmup_steps >= 0, "warmup_steps must be >= 0")
        _require(self.max_grad_norm > 0, "max_grad_norm must be positive")
        _require(self.micro_batch_size > 0, "micro_batch_size must be positive")
        _require(self.gradient_accumulation_steps > 0, "gradient_accumulation_steps must be positive")


@dataclass(frozen=True)
class RunConfig:
    num_examples: int
    checkpoint_dir: str
    save_every: int
    log_interval: int
    loss: Literal["grpo", "legacy"]
    source: Literal["mcts", "sample", "sft"]  # where each example's trajectories come from (training.sources)
    report_to: Literal["none", "wandb", "tensorboard"]
    keep_last: int  # checkpoints kept (older ones are pruned); 0 keeps all
    save_trees_every: int  # an HTML page of example 1's tree and every Nth's (JSON: every tree); 0: no HTML
    max_completion_tokens: int  # a trajectory's tokens beyond this are not trained on (memory bound)
    dist_timeout_s: float  # with several processes: how long a collective waits for a missing rank

    def __post_init__(self) -> None:
        _require(self.num_examples > 0, "num_examples must be positive")
        _require(
            self.source in ("mcts", "sample", "sft"), f"run.source must be mcts, sample or sft, not {self.source!r}"
        )
        _require(
            self.source != "sft" or self.loss == "legacy",
            "run.source sft trains on one reference solution per question, whose GRPO advantage is 0: use the legacy "
            "loss (its NLL weighted by the reward)",
        )
        _require(self.save_every > 0, "save_every must be positive")
        _require(self.log_interval > 0, "log_interval must be positive")
        _require(self.keep_last >= 0, "keep_last must be >= 0 (0: keep all)")
        _require(self.save_trees_every >= 0, "save_trees_every must be >= 0 (0: no HTML pages)")
        _require(self.max_completion_tokens > 0, "max_completion_tokens must be positive")
        _require(self.dist_timeout_s > 0, "dist_timeout_s must be positive")


@dataclass(frozen=True)
class TrainingConfig:
    seed: int
    dataset: DatasetConfig
    environment: EnvironmentConfig
    evaluation: EvaluationConfig
    mcts: MCTSConfig
    rewards: RewardsConfig
    grpo: GRPOConfig
    legacy: LegacyConfig
    optimizer: OptimizerConfig
    run: RunConfig
    sample: SampleConfig


@dataclass(frozen=True)
class Config:
    """The three files. `training_on_cpu` is training.yaml with its `cpu` section laid over it."""

    models: ModelsConfig
    teachers: TeachersConfig
    training: TrainingConfig
    training_on_cpu: TrainingConfig

    def for_device(self, device: str) -> Config:
        """This config as train_vllm.py uses it on `device` ("cpu" or "cuda"): on a CPU, `training` is
        `training_on_cpu`, so that a run with no flags stays small."""
        if device == "cpu":
            return dataclasses.replace(self, training=self.training_on_cpu)
        return self


# --- loading -----------------------------------------------------------------


def default_config_dir() -> Traversable:
    """The YAML defaults shipped inside the package (the repo's `config/`)."""
    return resources.files("alphazero_llm") / "defaults"


def load_config(directory: Path | Traversable | None = None) -> Config:
    """Read and validate models.yaml, teacher_models.yaml and training.yaml from `directory`.

    training.yaml's optional `cpu` section is a partial training.yaml (the same keys, a subset of
    them) laid over the rest for a CPU run; the result is validated like the file itself.
    """
    directory = default_config_dir() if directory is None else directory
    file = directory / TRAINING_FILE
    training = read_yaml(file)
    cpu = training.pop("cpu", None) if isinstance(training, dict) else None
    return Config(
        models=load_yaml_as(ModelsConfig, directory / MODELS_FILE),
        teachers=load_yaml_as(TeachersConfig, directory / TEACHERS_FILE),
        training=build(TrainingConfig, training, str(file)),
        training_on_cpu=build(TrainingConfig, overlay(training, cpu or {}, f"{file}: cpu"), f"{file} (cpu overlay)"),
    )
