"""What both verifiers faces serve: the environment arguments, settled once against config/, and the rows.

`resolve_environment(args, config)` is the one resolution: the 0.3 `load_environment()` (`alphazero_llm.rubric`)
and the v1 taskset (`alphazero_llm.taskset`, verifiers 0.3.1 and 0.4) both build from its `EnvSpec`. No verifiers
import here, so this module works under either release.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass
from typing import Any, Literal

from alphazero_llm.config import Config, ModelsConfig, build, override
from alphazero_llm.data import dataset_splits
from alphazero_llm.rewards import PerplexityReward

logger = logging.getLogger(__name__)

Row = dict[str, Any]  # {"question", "answer", "info": {"solution", "id", ...}} (data.py)


@dataclass(frozen=True)
class EnvArgs:
    """The environment arguments (`vf-eval -a '{...}'` on 0.3, `--env.taskset.*` on 0.4); None takes the
    default from config/."""

    tier: str | None = None
    use_student_model: bool = False
    student_model: str | None = None
    dataset: str | None = None  # "gsm8k" or "svamp" (training.yaml's dataset.kind)
    num_train_examples: int | None = None
    num_eval_examples: int | None = None
    num_dev_examples: int | None = None
    dataset_path: str | None = None
    system_prompt: str | None = None
    hre_weight: float | None = None
    pre_weight: float | None = None
    seed: int | None = None

    @classmethod
    def parse(cls, args: dict) -> EnvArgs:
        """Validate names and types; an unknown argument is an error listing the valid ones."""
        return build(cls, args, "load_environment() arguments")


@dataclass(frozen=True)
class EnvSpec:
    """An environment, resolved: its rows, prompt and reward weights (PRE's only when a student scores it)."""

    train: list[Row]  # the training rows, without the dev split (as train_vllm.py's)
    dev: list[Row]
    test: list[Row]  # the evaluation rows: the test split in file order, cut to num_eval_examples
    system_prompt: str
    hre_weight: float
    pre_weight: float
    pre: PerplexityReward | None  # the student's PRE, when use_student_model

    def rows(self, split: Literal["train", "dev", "test"]) -> list[Row]:
        return {"train": self.train, "dev": self.dev, "test": self.test}[split]


def resolve_environment(args: EnvArgs, config: Config) -> EnvSpec:
    """Settle `args` over `config` (`config.override`), validate them, load the rows and, when asked, the student."""
    config.teachers.tier(args.tier)  # validates the tier name now, not mid-run
    if args.student_model is not None and not args.use_student_model:
        raise ValueError("student_model is set but use_student_model is false; set both to score PRE")
    training = override(
        config.training,
        {
            "seed": args.seed,
            "dataset.kind": args.dataset,
            "dataset.path": args.dataset_path,
            "dataset.num_train_examples": args.num_train_examples,
            "dataset.num_eval_examples": args.num_eval_examples,
            "dataset.num_dev_examples": args.num_dev_examples,
            "environment.system_prompt": args.system_prompt,
            "environment.hre_weight": args.hre_weight,
            "environment.pre_weight": args.pre_weight,
        },
    )
    env = training.environment  # validated by config (weights >= 0)
    splits = dataset_splits(training.dataset, training.seed)
    num_eval = training.dataset.num_eval_examples
    return EnvSpec(
        train=splits.train,
        dev=splits.dev,
        # The test split stays in file order, comparable across runs; vf-eval shuffles on request.
        test=splits.test if num_eval == -1 else splits.test[:num_eval],
        system_prompt=env.system_prompt,
        hre_weight=env.hre_weight,
        pre_weight=env.pre_weight,
        pre=shared_perplexity_reward(args.student_model, config.models) if args.use_student_model else None,
    )


@functools.cache
def shared_perplexity_reward(student_model: str | None, models: ModelsConfig) -> PerplexityReward:
    """One student and one reference-perplexity cache per process, whatever the number of environments."""
    from alphazero_llm.models.locate import default_student_name
    from alphazero_llm.models.student import StudentModel, StudentSpec

    # Scoring only: the base model without a LoRA adapter, in the training dtype (see StudentSpec).
    spec = StudentSpec(name=student_model or default_student_name(models), lora=False)
    return PerplexityReward(StudentModel.load(spec, models))
