"""The one place a run's trajectory source is put together from its parts.

`train_vllm.py` (`training.run`), the benchmarks and the GPU check scripts all call these functions
instead of wiring the search themselves:

- `student_policy(model, config, seed)`: the student as the search asks it, sampling with
  models.yaml's `generation` temperature and top-p, `mcts.tokens_per_expansion` tokens a step and
  `mcts.rollout_tokens` a rollout, prompted by `environment.system_prompt`.
- `build_teachers(...)`: the teacher proposer (the tier's API teachers, `--teacher` endpoints, the local
  server, the reference solution) and the LLM ensemble behind it.
- `terminal_checker(...)`: rules, or rules then an API model.
- `mcts_source(...)`: the `MCTSSource` of a run; `sources.search_parts` builds one search's parts.
- `trajectory_source(...)`: the source `run.source` names, the tree's or a baseline's
  (`training.baselines`: plain GRPO sampling, SFT on the reference solutions).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import random
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

from alphazero_llm.config import Config, TeacherModelConfig
from alphazero_llm.mcts.proposers import Proposer, TeacherProposer
from alphazero_llm.mcts.reference_teacher import CombinedTeachers, ReferenceTeacher
from alphazero_llm.models.keys import MissingApiKeyError
from alphazero_llm.models.locate import resolve_model_path
from alphazero_llm.models.policy import SamplingModel, StudentPolicy
from alphazero_llm.models.sampling import Sampling
from alphazero_llm.models.student import StudentModel
from alphazero_llm.models.teachers import TeacherEnsemble
from alphazero_llm.models.terminal import TerminalChecker
from alphazero_llm.server import LocalServer
from alphazero_llm.training import distributed
from alphazero_llm.training.baselines import SampleSource, SFTSource
from alphazero_llm.training.engine import VLLMAdapterSync
from alphazero_llm.training.settings import RunSettings
from alphazero_llm.training.sources import MCTSSource, TrajectorySource
from alphazero_llm.training.trees import TREES_DIR, TreeWriter

logger = logging.getLogger(__name__)

LOCAL_TEACHER_NAME = "local"
# The loopback server needs no key; an unset variable makes the client use a placeholder.
LOCAL_TEACHER_KEY_ENV = "ALPHAZERO_LOCAL_TEACHER_KEY"
# Per-example seeds of the student's sampling are spaced this far apart (an example makes far fewer calls).
SEED_STRIDE = 100_000


def student_policy(model: SamplingModel, config: Config, seed: int) -> StudentPolicy:
    """The student as the search asks it (module docstring), its sampling seeded from `seed`."""
    generation, mcts = config.models.generation, config.training.mcts
    return StudentPolicy(
        model,
        step=Sampling(mcts.tokens_per_expansion, generation.temperature, generation.top_p),
        # A rollout is done once it states its answer (the end of its `#### N` line).
        rollout=Sampling(mcts.rollout_tokens, generation.temperature, generation.top_p, stop_at_answer=True),
        system_prompt=config.training.environment.system_prompt,
        seed=seed,
    )


def policy_factory(
    student: StudentModel, config: Config, sync: VLLMAdapterSync | None = None
) -> Callable[[int], StudentPolicy]:
    """`step -> StudentPolicy`: a fresh policy per example (its caches describe the policy of the moment).

    With `sync` (the vLLM engine), the student's steps and rollouts are sampled by vLLM, whose adapter
    `sync` brings up to date first; log-probs stay the transformers student's.
    """

    def make_policy(step: int) -> StudentPolicy:
        sampler: SamplingModel = student
        if sync is not None:
            from alphazero_llm.models.vllm_engine import VLLMSampledStudent

            sync.sync()
            sampler = VLLMSampledStudent(student, sync.engine)
        return student_policy(sampler, config, example_seed(config.training.seed, step))

    return make_policy


def example_seed(seed: int, step: int) -> int:
    """The student's sampling seed for example `step`: a function of the step alone, so a resumed run
    samples what a straight one does."""
    return seed * 1_000_000_000 + step * SEED_STRIDE


def _teacher_configs(settings: RunSettings, stack: ExitStack) -> tuple[TeacherModelConfig, ...]:
    choice, config = settings.teachers, settings.config
    if not choice.local:
        teachers = (*(config.teachers.tier(choice.tier) if choice.tier else ()), *choice.extra)
        logger.info("teachers: %s (%s)", ", ".join(t.name for t in teachers), choice.reason)
        return teachers
    model_dir = Path(resolve_model_path(settings.student))
    if not model_dir.is_dir():
        from huggingface_hub import snapshot_download

        # The student was loaded from the hub, so its files are in the local cache: serve those.
        model_dir = Path(snapshot_download(settings.student))
    log = settings.checkpoint_dir / distributed.per_rank("teacher_server.log", distributed.from_environment())
    server = stack.enter_context(LocalServer(model_dir, log_file=log))
    logger.info("teachers: %s, the student's base model served at %s (%s)", model_dir, server.base_url, choice.reason)
    return (TeacherModelConfig(LOCAL_TEACHER_NAME, "local", server.model_name, server.base_url, LOCAL_TEACHER_KEY_ENV),)


@dataclass(frozen=True)
class Teachers:
    """The search's teacher proposer (None: no teacher), the LLM ensemble behind it (None when no LLM
    teaches) and the bandit's `credit` for the values backed up through their steps."""

    proposer: Proposer | None
    ensemble: TeacherEnsemble | None
    credit: Callable[[str, float], None] | None


def build_teachers(settings: RunSettings, stack: ExitStack, loop: asyncio.AbstractEventLoop) -> Teachers:
    """The run's teachers, as `settings.teachers` chose them."""
    choice, config = settings.teachers, settings.config
    ensemble, credit = None, None
    teachers: list[Proposer] = []
    if choice.uses_llm:
        client = config.teachers.client
        if choice.local:
            client = dataclasses.replace(client, timeout_s=client.local_timeout_s)
        ensemble = TeacherEnsemble(
            _teacher_configs(settings, stack),
            client,
            config.teachers.bandit,
            tokens_per_expansion=config.training.mcts.tokens_per_expansion,
            rng=random.Random(config.training.seed),
        )
        stack.callback(lambda: loop.run_until_complete(ensemble.aclose()))
        llm = TeacherProposer(ensemble)
        teachers.append(llm)
        credit = llm.credit
    if choice.reference:
        logger.info("teachers: the data set's reference solutions (%s)", choice.reason)
        teachers.append(ReferenceTeacher())
    proposer = CombinedTeachers(teachers) if len(teachers) > 1 else teachers[0] if teachers else None
    return Teachers(proposer, ensemble, credit)


def terminal_checker(settings: RunSettings, ensemble: TeacherEnsemble | None) -> TerminalChecker:
    checker = settings.config.teachers.terminal_checker
    if not checker.use_llm:
        return TerminalChecker.rules_only(checker)
    if ensemble is None or settings.teachers.local:
        logger.info("terminal checks: rules only (this run asks no API model)")
        return TerminalChecker.rules_only(checker)
    try:
        return TerminalChecker(checker, ensemble.client)
    except MissingApiKeyError as exc:
        logger.warning("terminal checks: rules only, the LLM checker is unavailable: %s", exc)
        return TerminalChecker.rules_only(checker)


def mcts_source(
    settings: RunSettings,
    stack: ExitStack,
    loop: asyncio.AbstractEventLoop,
    student: StudentModel,
    sync: VLLMAdapterSync | None = None,
) -> tuple[MCTSSource, TeacherEnsemble | None]:
    """The run's MCTS source (`policy_factory` says who samples; each search's tree is saved under the run
    directory by `trees.TreeWriter`) and its LLM teacher ensemble (for the bandit's checkpoint), if any."""
    teachers = build_teachers(settings, stack, loop)
    config = settings.config
    ensemble = teachers.ensemble
    source = MCTSSource(
        loop,
        policy_factory(student, config, sync),
        teachers.proposer,
        terminal_checker(settings, ensemble),
        config.training.mcts,
        config.training.rewards,
        credit=teachers.credit,
        llm_teachers=ensemble,
        continue_without_teachers=settings.continue_without_teachers,
        on_search=TreeWriter(settings.checkpoint_dir / TREES_DIR, config.training.run.save_trees_every),
    )
    return source, ensemble


def trajectory_source(
    settings: RunSettings,
    stack: ExitStack,
    loop: asyncio.AbstractEventLoop,
    student: StudentModel,
    sync: VLLMAdapterSync | None = None,
) -> tuple[TrajectorySource, TeacherEnsemble | None]:
    """The run's trajectory source, as `run.source` names it, and its LLM teacher ensemble (only the tree's)."""
    config = settings.config
    training = config.training
    if training.run.source == "mcts":
        return mcts_source(settings, stack, loop, student, sync)
    make_policy = policy_factory(student, config, sync)
    if training.run.source == "sft":
        return SFTSource(make_policy), None
    terminal = TerminalChecker.rules_only(config.teachers.terminal_checker)
    return SampleSource(loop, make_policy, terminal, training.rewards, training.sample, config.models), None
