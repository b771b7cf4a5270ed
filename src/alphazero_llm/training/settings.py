"""train_vllm.py's settings, settled once: flags, the CPU overlay and the YAML -> one frozen `RunSettings`.

`settle` is pure (no model, no network, the environment passed in), so the flag -> setting mapping is
testable. The precedence is: a flag given on the command line, else training.yaml's `cpu` section on a
CPU (`Config.for_device`), else the YAML. Every part of the run then receives only the section it
needs (`settings.config.training.mcts`, `.run`, ...); nothing below this module re-reads a flag.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from alphazero_llm.config import Config, TeacherModelConfig, TeachersConfig, TrainingConfig, override
from alphazero_llm.models.keys import is_loopback_url
from alphazero_llm.training.engine import EngineChoice, choose_engine, vllm_installed


@dataclass(frozen=True)
class TeacherChoice:
    """Which teachers propose steps, and why (for the log). Holds key variable names, never values."""

    local: bool
    tier: str | None  # None: the tier's teachers are not used
    extra: tuple[TeacherModelConfig, ...]
    reason: str
    reference: bool = False  # the data set's reference solution teaches too

    @property
    def uses_llm(self) -> bool:
        return self.local or self.tier is not None or bool(self.extra)


@dataclass(frozen=True)
class RunSettings:
    config: Config  # the device's config with the flags applied: `config.training` is what the run uses
    device: str  # "cpu" or "cuda"
    student: str
    teachers: TeacherChoice
    resume: bool
    engine: EngineChoice
    fresh_if_no_checkpoint: bool = False  # --resume with no good checkpoint starts fresh instead of failing
    continue_without_teachers: bool = False  # every LLM teacher out of the run: go on instead of stopping

    @property
    def training(self) -> TrainingConfig:
        return self.config.training

    @property
    def checkpoint_dir(self) -> Path:
        return Path(self.training.run.checkpoint_dir)


def choose_teachers(
    config: TeachersConfig,
    tier: str,
    extra: Sequence[TeacherModelConfig],
    local: bool,
    env: Mapping[str, str],
    reference: str = "off",
) -> TeacherChoice:
    """The teachers of a run. `reference` is --reference-teacher: "off", "also" or "only"."""
    if reference == "only":
        if local or extra:
            raise ValueError("--reference-teacher only leaves no room for --local-teacher or --teacher")
        return TeacherChoice(False, None, (), "--reference-teacher only: no LLM teacher", reference=True)
    choice = _llm_teachers(config, tier, extra, local, env)
    return dataclasses.replace(choice, reference=True) if reference == "also" else choice


def _llm_teachers(
    config: TeachersConfig, tier: str, extra: Sequence[TeacherModelConfig], local: bool, env: Mapping[str, str]
) -> TeacherChoice:
    if local:
        return TeacherChoice(True, None, (), "--local-teacher was given")
    missing = sorted(
        {t.api_key_env for t in config.tier(tier) if not env.get(t.api_key_env) and not is_loopback_url(t.base_url)}
    )
    if not missing:
        return TeacherChoice(False, tier, tuple(extra), f"the keys of tier {tier!r} are set in the environment")
    unset = ", ".join(missing)
    if extra:
        return TeacherChoice(
            False, None, tuple(extra), f"tier {tier!r} skipped ({unset} unset); using the --teacher ones only"
        )
    return TeacherChoice(
        True, None, (), f"no key for tier {tier!r} ({unset} unset) and no --teacher: the student's base model teaches"
    )


def settle(
    args: argparse.Namespace,
    config: Config,
    device: str,
    env: Mapping[str, str] | None = None,
    has_vllm: bool | None = None,
) -> RunSettings:
    """The run's settings from the parsed flags (None: not given) and the config (module docstring).

    `env` defaults to os.environ and `has_vllm` (whether vLLM is installed) is looked up when None;
    tests pass both.
    """
    env = os.environ if env is None else env
    has_vllm = vllm_installed() if has_vllm is None else has_vllm
    config = config.for_device(device)
    loss = "grpo" if args.use_grpo else "legacy" if args.use_legacy else None
    source = args.source or config.training.run.source
    if source == "sft" and loss is None:
        loss = "legacy"  # the reference solution's NLL; GRPO has no advantage to learn from in a group of one
    if args.dev_size is not None and (args.dataset or config.training.dataset.kind) == "svamp":
        raise ValueError("--dev-size: SVAMP's split is fixed (600 train / 100 dev / 300 test, svamp.py)")
    training = override(
        config.training,
        {
            "seed": args.seed,
            "dataset.kind": args.dataset,
            "dataset.path": args.dataset_path,
            "dataset.num_eval_examples": args.eval_size,
            "dataset.num_dev_examples": args.dev_size,
            "evaluation.split": args.eval_split,
            "mcts.rollout": args.rollout,
            "run.num_examples": args.num_examples,
            "run.checkpoint_dir": None if args.checkpoint_dir is None else str(args.checkpoint_dir),
            "run.save_every": args.save_every,
            "run.log_interval": args.log_interval,
            "run.loss": loss,
            "run.source": args.source,
            "run.report_to": args.report_to,
            "run.keep_last": args.keep_last,
            "run.save_trees_every": args.save_trees_every,
        },
    )
    models = config.models
    tier = args.tier if args.tier is not None else config.teachers.default_tier
    if source == "mcts":
        teachers = choose_teachers(config.teachers, tier, args.teacher, args.local_teacher, env, args.reference_teacher)
    elif args.local_teacher or args.teacher or args.reference_teacher != "off":
        raise ValueError(f"--source {source} asks no teacher; --local-teacher, --teacher and --reference-teacher "
                         "are for --source mcts")  # fmt: skip
    else:
        teachers = TeacherChoice(False, None, (), f"--source {source}: no teacher")
    return RunSettings(
        config=dataclasses.replace(config, training=training),
        device=device,
        student=args.student or (models.student.cpu_name if device == "cpu" else models.student.name),
        teachers=teachers,
        resume=args.resume,
        engine=choose_engine(args.engine, device, has_vllm),
        fresh_if_no_checkpoint=args.fresh_if_no_checkpoint,
        continue_without_teachers=args.continue_without_teachers,
    )
