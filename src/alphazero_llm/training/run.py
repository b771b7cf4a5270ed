"""train_vllm.py's run: wiring only. Data, the student, the trajectory source (`training.assembly`), the
`Trainer`, and the greedy evaluation before and after.

1. The data set's train rows become the `Problem`s searched; `dataset.num_eval_examples` test rows
   are the greedy evaluation.
2. The student (LoRA) from `--student` or models.yaml (the embedded SmolLM2 on CPU).
3. `--engine` says who samples the search's student steps and rollouts (`training.engine`): the
   transformers student, or (auto on CUDA when vLLM is installed) one `VLLMEngine` on the student's
   base model, whose adapter `VLLMAdapterSync` keeps the student's current one: before each search,
   when the Trainer's update count changed since the last sync (and before the first search, which
   covers `--resume`). Log-probs are always the transformers student's.
4. The trajectory source (`assembly.mcts_source`: teachers, terminal check, the student policy) and the
   `Trainer`; greedy accuracy before (fresh runs) and after training, with Wilson 95% intervals; PNG
   plots and a summary table at the end.

Several processes (`torchrun` / `accelerate launch`, `training.distributed`): every rank loads the student
(the same seed, so the same LoRA initialisation, checked), searches its own examples and evaluates its own
batches; rank 0 alone writes the run directory (metrics, checkpoints, evaluation reports, plots, wandb or
tensorboard). Each provider's rate limit is the run's budget, split evenly across the ranks; `--local-teacher`
starts one server per rank (the embedded student's server holds about 1.8 GiB; per-rank servers need no
cross-process start-up protocol, and a rank's searches never queue behind another rank's).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
from collections.abc import Mapping, Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import torch

from alphazero_llm.config import Config, TrainingConfig
from alphazero_llm.data import DataError, Problem, dataset_splits
from alphazero_llm.errors import UserError
from alphazero_llm.models.student import StudentModel, StudentSpec
from alphazero_llm.rewards import PerplexityReward
from alphazero_llm.training import distributed, preflight
from alphazero_llm.training.assembly import trajectory_source
from alphazero_llm.training.checkpoint import find_latest, sha256_file
from alphazero_llm.training.engine import VLLM_ADAPTER_DIR, VLLMAdapterSync, start_engine
from alphazero_llm.training.evaluation import EvalResult, evaluate_greedy, merge_results, shard_rows, write_answers
from alphazero_llm.training.loop import Trainer
from alphazero_llm.training.metrics import MetricsLog, make_reporter, summary_table, write_plots
from alphazero_llm.training.settings import RunSettings

logger = logging.getLogger(__name__)

EVAL_BEFORE_FILE = "eval_before.json"
EVAL_BATCH_SIZE = 8  # prompts generated together; each rank evaluates whole batches
EVAL_FILE = "eval.json"


def evaluate(
    student: StudentModel,
    rows: Sequence[Mapping[str, Any]],
    config: Config,
    out: Path,
    when: str,
    dist: distributed.Dist | None = None,
) -> EvalResult:
    """The greedy evaluation (`training.evaluation`) of `rows`, its answers written to `answers_<when>.jsonl`.

    The environment's reward uses the rubric's PRE: the base student's (adapter disabled), as vf-eval's
    `use_student_model` scores it. With several ranks each evaluates its own batches (`shard_rows`) and every
    rank gets the merged result, equal to one process's; rank 0 writes the answers.
    """
    dist = dist or distributed.Dist()
    training = config.training
    env, split = training.environment, training.evaluation.split
    reward = PerplexityReward(student)

    def base_pre(chats: Sequence[Any], texts: Sequence[str], solutions: Sequence[str]) -> list[float]:
        with torch.no_grad(), student.reference():
            return reward.score(chats, texts, solutions)

    mine = shard_rows(len(rows), EVAL_BATCH_SIZE, dist.rank, dist.world_size)
    part = evaluate_greedy(
        student, [rows[i] for i in mine], env.system_prompt, training.evaluation.max_new_tokens,
        pre=base_pre, rubric_weights=(env.hre_weight, env.pre_weight), batch_size=EVAL_BATCH_SIZE,
        desc=f"evaluating ({split}, {when})", progress=dist.is_main,
    )  # fmt: skip
    result = merge_results(distributed.all_gather((mine, part), dist), len(rows))
    if dist.is_main:
        write_answers(out / f"answers_{when}.jsonl", rows, result)
        logger.info("greedy evaluation %s training, %d %s questions: %s", when, len(rows), split, result)
    return result


def run(settings: RunSettings) -> int:
    """Train as `settings` says; 0 when the run finished. Everything `preflight` can check is checked before
    the student loads, and nothing in the run directory is rewritten before a resumed checkpoint verified."""
    dist = distributed.init(settings.device, settings.training.run.dist_timeout_s)
    try:
        return _run(distributed.share_rate_limits(settings, dist.world_size), dist)
    finally:
        distributed.shutdown(dist)


def _run(settings: RunSettings, dist: distributed.Dist) -> int:
    config, training = settings.config, settings.training
    out = settings.checkpoint_dir
    preflight.run_directory(out)
    preflight.student_source(settings.student)
    preflight.teacher_keys(settings)
    ds, seed = training.dataset, training.seed
    splits = dataset_splits(ds, seed)
    problems = [Problem.from_row(row) for row in splits.train]
    held_out = splits.named(training.evaluation.split)
    eval_rows = held_out if ds.num_eval_examples == -1 else held_out[: ds.num_eval_examples]
    if not problems:
        raise DataError(f"no training rows in {splits.source}")
    start = preflight.resume_point(settings)
    if dist.enabled:
        _check_same_start(start, dist)
    logger.info(
        "run: %d %s examples, %s loss, device %s, source %s, %d process(es)", training.run.num_examples, ds.kind,
        training.run.loss, settings.device, _describe_source(training), dist.world_size,
    )  # fmt: skip
    # --seed fixes everything drawn from torch's generator: the LoRA initialisation here (the same on every
    # rank), dropout in training (seeded per example, `Trainer`).
    torch.manual_seed(seed)
    student = StudentModel.load(StudentSpec(name=settings.student, device=settings.device), config.models)
    engine = start_engine(settings.engine, settings.student, student, config.models, seed)
    # Each rank's own engine reloads its own copy of the adapter.
    adapter_dir = out / distributed.per_rank(VLLM_ADAPTER_DIR, dist)
    sync = VLLMAdapterSync(student, engine, adapter_dir) if engine is not None else None
    with ExitStack() as stack:
        loop = asyncio.new_event_loop()
        stack.callback(loop.close)
        trajectories, ensemble = trajectory_source(settings, stack, loop, student, sync)
        reporter = make_reporter(training.run.report_to, out, _run_config(settings)) if dist.is_main else None
        metrics = MetricsLog(out / "metrics.jsonl", reporters=[reporter] if reporter else [])
        bandit = ensemble.bandit if ensemble else None
        trainer = Trainer(student, trajectories, problems, training, bandit=bandit, metrics=metrics, dist=dist)
        if sync is not None:
            sync.version = lambda: trainer.updates  # the policy changes with each optimiser step
        if start is not None:
            trainer.resume(start)
        if dist.enabled:  # the seed's LoRA initialisation, or the resumed checkpoint: the same on every rank
            distributed.check_identical(trainer.adapter(), dist, when="before training")
        stack.callback(lambda: trainer.metrics.close())
        before = _before(trainer, student, eval_rows, config, out)
        trainer.run()
        after = evaluate(student, eval_rows, config, out, "after", dist) if eval_rows else None
        if not dist.is_main:
            return 0
        report = {
            "split": training.evaluation.split,
            "questions": [row["info"]["id"] for row in eval_rows],
            "max_new_tokens": training.evaluation.max_new_tokens,
            "adapter": _final_adapter(out),  # the adapter "after" evaluated, kept with its digest
            "before": _record(before),
            "after": _record(after),
        }
        (out / EVAL_FILE).write_text(json.dumps(report, indent=2), encoding="utf-8")
        plots = write_plots(trainer.metrics.records, out / "plots")
        extra = {"eval before": before or "-", "eval after": after or "-"}
        out_of_run = trainer.metrics.records[-1].get("teachers_out") if trainer.metrics.records else None
        if out_of_run:
            extra["teachers out"] = "; ".join(f"{name}: {why}" for name, why in sorted(out_of_run.items()))
        logger.info("summary:\n%s", summary_table(trainer.metrics.records, extra))
        logger.info("wrote checkpoints, %s and %d plots under %s", trainer.metrics.path.name, len(plots), out)
    return 0


def _check_same_start(start: Path | None, dist: distributed.Dist) -> None:
    """Every rank must start from the same checkpoint (or all from scratch). Each reads its own --checkpoint-dir,
    so on several machines that directory must be one shared file system (or a copy of rank 0's)."""
    seen = distributed.all_gather(start.name if start is not None else None, dist)
    if len(set(seen)) > 1:
        where = ", ".join(f"rank {rank}: {name or 'no checkpoint'}" for rank, name in enumerate(seen))
        raise UserError(
            f"the ranks would start from different checkpoints ({where}); on several machines --checkpoint-dir "
            "must be one shared directory, or a copy of rank 0's on each machine"
        )


def _describe_source(training: TrainingConfig) -> str:
    source, mcts, sample = training.run.source, training.mcts, training.sample
    if source == "mcts":
        return (
            f"mcts: {mcts.num_iterations} iterations x ({mcts.num_right} right, {mcts.num_wrong} wrong, "
            f"{mcts.num_student} student) steps of {mcts.tokens_per_expansion} tokens, depth {mcts.max_depth}"
        )
    if source == "sample":
        return f"sample (plain GRPO): {sample.group_size} answers of at most {sample.max_new_tokens} tokens"
    return "sft: the reference solutions"


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
    result = evaluate(student, rows, config, out, "before", trainer.dist)
    if trainer.dist.is_main:
        path.write_text(json.dumps(result.to_record(), indent=2), encoding="utf-8")
    return result


def _final_adapter(out: Path) -> dict[str, str] | None:
    """The newest checkpoint's adapter (the policy evaluated "after") and its SHA-256, or None."""
    latest = find_latest(out)
    if latest is None:
        return None
    weights = latest / "adapter" / "adapter_model.safetensors"
    return {"path": str(weights), "sha256": sha256_file(weights)}


def _record(result: EvalResult | None) -> dict[str, Any] | None:
    return None if result is None else result.to_record()


def _run_config(settings: RunSettings) -> dict[str, Any]:
    """What the reporter records about the run: settings only (teacher key variable names, never values)."""
    data = dataclasses.asdict(settings)
    return json.loads(json.dumps(data, default=str))
