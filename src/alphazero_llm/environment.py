"""The verifiers environment: GSM8K (or SVAMP: `dataset="svamp"`), a `#### N` system prompt, the HRE(+PRE) rubric."""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass

import verifiers as vf
from datasets import Dataset

from alphazero_llm.config import Config, ModelsConfig, build, load_config, override
from alphazero_llm.data import dataset_splits
from alphazero_llm.models.prompts import question_messages
from alphazero_llm.rewards import Gsm8kParser, PerplexityReward, build_rubric

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class EnvArgs:
    """The arguments `vf-eval -a '{...}'` may pass; None takes the default from config/."""

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


def build_environment(args: EnvArgs, config: Config) -> vf.SingleTurnEnv:
    """Wire data, parser and rubric into a SingleTurnEnv; `args` override `config` (`config.override`)."""
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
    pre = shared_perplexity_reward(args.student_model, config.models) if args.use_student_model else None
    data, system_prompt = training.dataset, training.environment.system_prompt

    def with_prompt(dataset):  # the student's one chat prompt (prompts.question_messages)
        return dataset.map(lambda row: {"prompt": question_messages(row["question"], system_prompt)})

    # The training rows exclude the dev split, as train_vllm.py's do (data.dataset_splits).
    splits = dataset_splits(data, training.seed)
    dataset = Dataset.from_list(splits.train)
    # vf-eval shuffles on request (--shuffle); the test split stays in order, comparable across runs.
    test = splits.test if data.num_eval_examples == -1 else splits.test[: data.num_eval_examples]
    eval_dataset = Dataset.from_list(test)
    parser = Gsm8kParser()
    env = training.environment
    rubric = build_rubric(hre_weight=env.hre_weight, pre_weight=env.pre_weight, pre=pre, parser=parser)
    return vf.SingleTurnEnv(
        dataset=with_prompt(dataset),
        eval_dataset=with_prompt(eval_dataset),
        # Informative only: every prompt already opens with it (verifiers adds none to a prompt that has one).
        system_prompt=system_prompt or None,
        parser=parser,
        rubric=rubric,
    )


@functools.cache
def shared_perplexity_reward(student_model: str | None, models: ModelsConfig) -> PerplexityReward:
    """One student and one reference-perplexity cache per process, whatever the number of environments."""
    from alphazero_llm.models.locate import default_student_name
    from alphazero_llm.models.student import StudentModel, StudentSpec

    # Scoring only: the base model without a LoRA adapter, in the training dtype (see StudentSpec).
    spec = StudentSpec(name=student_model or default_student_name(models), lora=False)
    return PerplexityReward(StudentModel.load(spec, models))


def load_environment(**env_args) -> vf.SingleTurnEnv:
    """Entry point used by verifiers (`vf-eval alphazero-llm-trainer -a '{...}'`)."""
    return build_environment(EnvArgs.parse(env_args), load_config())
