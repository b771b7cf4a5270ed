"""train_vllm.py's run: build the data, the student, the teachers and the search, then train and evaluate.

`run_settings` turns the parsed command line and the config into a `RunSettings` (pure: no model, no
network), so that the flag -> setting mapping is testable; `run` does the work:

1. GSM8K train rows (the search's questions) and `eval_size` test rows (the greedy evaluation).
2. The student (LoRA) from `--student` or models.yaml (the embedded SmolLM2 on CPU).
3. The teachers: the tier's API teachers (plus any `--teacher`), or, with `--local-teacher` or when no
   key of the tier is in the environment and no `--teacher` is given, the student's own base model
   served by `transformers serve` on 127.0.0.1 for the length of the run. `--reference-teacher also`
   adds GSM8K's reference solution as one more teacher (`mcts.reference_teacher`); `only` makes it
   the sole teacher (no LLM teacher, no server, no key).
4. One search per example (`SearchRunner`), on one event loop that lives as long as the run, because
   the teachers' HTTP clients are bound to the loop they were first used on. `--engine` says who
   samples the search's student steps and rollouts (`training.engine`): the transformers student, or
   (auto on CUDA when vLLM is installed) one `VLLMEngine` on the student's base model, started beside
   the student with models.yaml's `vllm` settings. With vLLM, PRE and the PUCT priors are still the
   transformers student's log-probs (the trained policy), and vLLM serves the student's current LoRA:
   before each search, when the Trainer's update count changed since the last sync (and before the
   first search, which covers `--resume`), the adapter is saved to `<checkpoint-dir>/vllm_adapter/`
   and loaded into vLLM under a new adapter id.
5. Greedy accuracy before (fresh runs) and after training, with Wilson 95% intervals; the `Trainer`
   in between; PNG plots and a summary table at the end.

On a CPU the `cpu` section of training.yaml replaces the search budget and the run's sizes, so that a
run with no flags stays small; flags given on the command line win.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import logging
import os
import random
from collections.abc import Mapping, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from alphazero_llm.config import Config, MCTSConfig, TeacherModelConfig, TeachersConfig
from alphazero_llm.data import Gsm8kSource, load_gsm8k
from alphazero_llm.mcts import Evaluator, Proposers, SearchResult, search
from alphazero_llm.mcts.proposers import Proposer, StudentAdapter, TeacherProposer
from alphazero_llm.mcts.reference_teacher import CombinedTeachers, ReferenceTeacher
from alphazero_llm.models.student import StudentModel, StudentSpec, resolve_model_path
from alphazero_llm.models.teacher_client import MissingApiKeyError, is_loopback_url
from alphazero_llm.models.teachers import TeacherEnsemble
from alphazero_llm.models.terminal import TerminalChecker
from alphazero_llm.models.vllm_engine import VLLMSampledStudent
from alphazero_llm.server import LocalServer
from alphazero_llm.training.checkpoint import find_latest
from alphazero_llm.training.engine import (
    VLLM_ADAPTER_DIR,
    EngineChoice,
    VLLMAdapterSync,
    choose_engine,
    start_engine,
    vllm_installed,
)
from alphazero_llm.training.evaluation import EvalResult, evaluate_greedy
from alphazero_llm.training.loop import LoopSettings, Trainer
from alphazero_llm.training.metrics import MetricsLog, make_reporter, summary_table, write_plots

logger = logging.getLogger(__name__)

LOCAL_TEACHER_NAME = "local"
# The loopback server needs no key; an unset variable makes the client use a placeholder.
LOCAL_TEACHER_KEY_ENV = "ALPHAZERO_LOCAL_TEACHER_KEY"
EVAL_BEFORE_FILE = "eval_before.json"
EVAL_FILE = "eval.json"
# Per-example seeds of the student's sampling are spaced this far apart (an example makes far fewer calls).
SEED_STRIDE = 100_000


@dataclass(frozen=True)
class TeacherChoice:
    """Which teachers propose steps, and why (for the log). Holds key variable names, never values."""

    local: bool
    tier: str | None  # None: the tier's teachers are not used
    extra: tuple[TeacherModelConfig, ...]
    reason: str
    reference: bool = False  # GSM8K's reference solution teaches too

    @property
    def uses_llm(self) -> bool:
        return self.local or self.tier is not None or bool(self.extra)


@dataclass(frozen=True)
class RunSettings:
    loop: LoopSettings
    mcts: MCTSConfig
    eval_size: int
    device: str  # "cpu" or "cuda"
    student: str
    dataset_path: str | None
    teachers: TeacherChoice
    report_to: str
    resume: bool
    engine: EngineChoice


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


def run_settings(
    args: argparse.Namespace,
    config: Config,
    device: str,
    env: Mapping[str, str] | None = None,
    has_vllm: bool | None = None,
) -> RunSettings:
    """The run's settings from the parsed flags: explicit flags, else the CPU defaults on CPU, else the config.

    `has_vllm` (whether vLLM is installed) is looked up when None; tests pass it.
    """
    env = os.environ if env is None else env
    has_vllm = vllm_installed() if has_vllm is None else has_vllm
    training = config.training
    on_cpu = device == "cpu"
    cpu = training.cpu

    def pick(flag: Any, cpu_value: Any, value: Any) -> Any:
        return flag if flag is not None else (cpu_value if on_cpu else value)

    mcts = training.mcts
    if on_cpu:
        mcts = training.cpu_mcts
    loss = "grpo" if args.use_grpo else "legacy" if args.use_legacy else training.run.loss
    loop = LoopSettings(
        num_examples=pick(args.num_examples, cpu.num_examples, training.run.num_examples),
        checkpoint_dir=Path(args.checkpoint_dir),
        save_every=pick(args.save_every, cpu.save_every, training.run.save_every),
        log_interval=args.log_interval,
        loss=loss,
        seed=args.seed,
        system_prompt=training.environment.system_prompt,
    )
    return RunSettings(
        loop=loop,
        mcts=mcts,
        eval_size=pick(args.eval_size, cpu.eval_size, training.dataset.num_eval_examples),
        device=device,
        # `device` is resolved already; default_student_name would resolve it again (and need CUDA to say "cuda").
        student=args.student or (config.models.student.cpu_name if on_cpu else config.models.student.name),
        dataset_path=args.dataset_path,
        teachers=choose_teachers(
            config.teachers, args.tier, args.teacher, args.local_teacher, env, args.reference_teacher
        ),
        report_to=args.report_to,
        resume=args.resume,
        engine=choose_engine(args.engine, device, has_vllm),
    )


class SearchRunner:
    """The Trainer's `search_fn`: one MCTS per example, with a fresh student adapter seeded by the step.

    With `sync` (the vLLM engine), the student's steps and rollouts are sampled by vLLM, whose adapter
    `sync` brings up to date before each search; log-probs stay the transformers student's.
    """

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        student: StudentModel,
        teachers: Proposer,
        ensemble: TeacherEnsemble | None,
        terminal: TerminalChecker,
        references: Mapping[str, str],
        config: Config,
        mcts: MCTSConfig,
        seed: int,
        sync: VLLMAdapterSync | None = None,
    ) -> None:
        self.loop = loop
        self.student = student
        self.teachers = teachers
        self.ensemble = ensemble  # the LLM teachers' accounting, when there are any
        self.terminal = terminal
        self.references = dict(references)
        self.config = config
        self.mcts = mcts
        self.seed = seed
        self.sync = sync
        self.last: dict[str, float] = {}

    def _totals(self) -> tuple[float, float]:
        if self.ensemble is None:
            return 0.0, 0.0
        metrics = self.ensemble.accounting.metrics()
        tokens = metrics.get("teachers/total/tokens_in", 0.0) + metrics.get("teachers/total/tokens_out", 0.0)
        return metrics.get("teachers/total/cost_usd", 0.0), tokens

    def __call__(self, question: str, gold: str, rng: random.Random, step: int) -> SearchResult:
        generation = self.config.models.generation
        sampler: Any = self.student
        if self.sync is not None:
            self.sync.sync()
            sampler = VLLMSampledStudent(self.student, self.sync.engine)
        # A new adapter per example: its log-prob caches describe the policy of the moment, which every
        # update changes; its seed depends on the step only, so a resumed run samples what a straight one does.
        adapter = StudentAdapter(
            sampler,
            max_new_tokens=self.mcts.tokens_per_expansion,
            temperature=generation.temperature,
            top_p=generation.top_p,
            seed=self.seed * 1_000_000_000 + step * SEED_STRIDE,
            references=self.references,
            system_prompt=self.config.training.environment.system_prompt,
        )
        puct = self.mcts.selection == "puct"
        proposers = Proposers(
            teacher=self.teachers,
            student=adapter if self.mcts.num_student > 0 else None,
            prior=adapter if puct else None,
            credit=getattr(self.teachers, "credit", None),
        )
        evaluator = Evaluator(self.terminal, adapter, adapter if self.mcts.rollout else None)
        cost, tokens = self._totals()
        result = self.loop.run_until_complete(
            search(question, gold, proposers, evaluator, self.mcts, self.config.training.rewards, rng)
        )
        cost_after, tokens_after = self._totals()
        self.last = {"cost_usd": cost_after - cost, "teacher_tokens": tokens_after - tokens}
        return result

    def extra_metrics(self) -> dict[str, float]:
        return dict(self.last)


def teacher_configs(
    settings: RunSettings, config: Config, stack: ExitStack, log_dir: Path
) -> tuple[TeacherModelConfig, ...]:
    choice = settings.teachers
    if not choice.local:
        teachers = (*(config.teachers.tier(choice.tier) if choice.tier else ()), *choice.extra)
        logger.info("teachers: %s (%s)", ", ".join(t.name for t in teachers), choice.reason)
        return teachers
    model_dir = Path(resolve_model_path(settings.student))
    if not model_dir.is_dir():
        from huggingface_hub import snapshot_download

        # The student was loaded from the hub, so its files are in the local cache: serve those.
        model_dir = Path(snapshot_download(settings.student))
    server = stack.enter_context(LocalServer(model_dir, log_file=log_dir / "teacher_server.log"))
    logger.info("teachers: %s, the student's base model served at %s (%s)", model_dir, server.base_url, choice.reason)
    return (TeacherModelConfig(LOCAL_TEACHER_NAME, "local", server.model_name, server.base_url, LOCAL_TEACHER_KEY_ENV),)


def build_teachers(
    settings: RunSettings,
    config: Config,
    stack: ExitStack,
    loop: asyncio.AbstractEventLoop,
    references: Mapping[str, str],
) -> tuple[Proposer, TeacherEnsemble | None]:
    """The search's teacher proposer, and the LLM ensemble behind it (None when only the reference teaches)."""
    choice = settings.teachers
    ensemble, llm = None, None
    teachers: list[Proposer] = []
    if choice.uses_llm:
        client = config.teachers.client
        if choice.local:
            client = dataclasses.replace(client, timeout_s=client.local_timeout_s)
        ensemble = TeacherEnsemble(
            teacher_configs(settings, config, stack, settings.loop.checkpoint_dir),
            client,
            config.teachers.bandit,
            tokens_per_expansion=settings.mcts.tokens_per_expansion,
            rng=random.Random(settings.loop.seed),
        )
        stack.callback(lambda: loop.run_until_complete(ensemble.aclose()))
        llm = TeacherProposer(ensemble)
        teachers.append(llm)
    if choice.reference:
        logger.info("teachers: GSM8K's reference solutions (%s)", choice.reason)
        teachers.append(ReferenceTeacher(references))
    if len(teachers) == 1:
        return teachers[0], ensemble
    return CombinedTeachers(teachers, credit=llm.credit if llm else None), ensemble


def terminal_checker(settings: RunSettings, config: Config, ensemble: TeacherEnsemble | None) -> TerminalChecker:
    checker = config.teachers.terminal_checker
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


def evaluate(student: StudentModel, rows: Sequence[Mapping[str, Any]], config: Config, when: str) -> EvalResult:
    result = evaluate_greedy(
        student, rows, config.training.environment.system_prompt, config.models.generation.max_new_tokens
    )
    logger.info("greedy accuracy %s training on %d test questions: %s", when, len(rows), result)
    return result


def run(settings: RunSettings, config: Config) -> int:
    """Train as `settings` says; 0 when the run finished."""
    out = settings.loop.checkpoint_dir
    out.mkdir(parents=True, exist_ok=True)
    ds = config.training.dataset
    source = Gsm8kSource.resolve(settings.dataset_path, ds.name, ds.config)
    seed = settings.loop.seed
    train_rows = list(load_gsm8k(ds.train_split, source, ds.num_train_examples, ds.shuffle, seed))
    eval_rows = list(load_gsm8k(ds.eval_split, source, settings.eval_size)) if settings.eval_size > 0 else []
    if not train_rows:
        raise ValueError(f"no training rows in {source}")
    if not settings.resume and find_latest(out) is not None:
        logger.warning("%s holds checkpoints from an earlier run; they will be overwritten (use --resume)", out)
    logger.info(
        "run: %d examples, %s loss, device %s, search %d iterations x (%d right, %d wrong, %d student) steps of %d "
        "tokens, depth %d",
        settings.loop.num_examples, settings.loop.loss, settings.device, settings.mcts.num_iterations,
        settings.mcts.num_right, settings.mcts.num_wrong, settings.mcts.num_student,
        settings.mcts.tokens_per_expansion, settings.mcts.max_depth,
    )  # fmt: skip
    student = StudentModel.load(StudentSpec(name=settings.student, device=settings.device), config.models)
    engine = start_engine(settings.engine, settings.student, student, config.models, seed)
    sync = VLLMAdapterSync(student, engine, out / VLLM_ADAPTER_DIR) if engine is not None else None
    training = dataclasses.replace(config.training, mcts=settings.mcts)
    references = {row["question"]: row["info"]["solution"] for row in train_rows}
    with ExitStack() as stack:
        loop = asyncio.new_event_loop()
        stack.callback(loop.close)
        teachers, ensemble = build_teachers(settings, config, stack, loop, references)
        runner = SearchRunner(
            loop,
            student,
            teachers,
            ensemble,
            terminal_checker(settings, config, ensemble),
            references,
            config,
            settings.mcts,
            seed,
            sync,
        )
        reporter = make_reporter(settings.report_to, out, _run_config(settings))
        metrics = MetricsLog(out / "metrics.jsonl", reporters=[reporter] if reporter else [])
        trainer = Trainer(
            student, runner, train_rows, training, settings.loop,
            bandit=ensemble.bandit if ensemble else None, metrics=metrics, extra_metrics=runner.extra_metrics,
        )  # fmt: skip
        if sync is not None:
            sync.version = lambda: trainer.updates  # the policy changes with each optimiser step
        if settings.resume:
            trainer.resume()
        stack.callback(lambda: trainer.metrics.close())
        before = _before(trainer, student, eval_rows, config, out)
        trainer.run()
        after = evaluate(student, eval_rows, config, "after") if eval_rows else None
        (out / EVAL_FILE).write_text(
            json.dumps({"before": _record(before), "after": _record(after)}, indent=2), encoding="utf-8"
        )
        plots = write_plots(trainer.metrics.records, out / "plots")
        extra = {"eval before": before or "-", "eval after": after or "-"}
        logger.info("summary:\n%s", summary_table(trainer.metrics.records, extra))
        logger.info("wrote checkpoints, %s and %d plots under %s", trainer.metrics.path.name, len(plots), out)
    return 0


def _before(
    trainer: Trainer, student: StudentModel, rows: Sequence[Mapping[str, Any]], config: Config, out: Path
) -> EvalResult | None:
    """Evaluate before training on a fresh run; a resumed run reads the fresh run's figure back."""
    path = out / EVAL_BEFORE_FILE
    if trainer.step > 0:
        if path.is_file():
            return EvalResult.from_record(json.loads(path.read_text(encoding="utf-8")))
        return None
    if not rows:
        return None
    result = evaluate(student, rows, config, "before")
    path.write_text(json.dumps(result.to_record(), indent=2), encoding="utf-8")
    return result


def _record(result: EvalResult | None) -> dict[str, Any] | None:
    return None if result is None else result.to_record()


def _run_config(settings: RunSettings) -> dict[str, Any]:
    """What the reporter records about the run: settings only (teacher key variable names, never values)."""
    data = dataclasses.asdict(settings)
    return json.loads(json.dumps(data, default=str))
