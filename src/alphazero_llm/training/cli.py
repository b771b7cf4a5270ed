"""Command line of `train_vllm.py` (console script `train-vllm`): the seed's flags. Parsing only.

Every flag that has a config key defaults to None here, so that an explicit flag can be told from a
default: `settings.settle` lays the flags over the config (and its CPU overlay on a CPU), once. The
help texts show the config's values. `training.run` then builds the parts and trains.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from alphazero_llm.config import Config, ConfigError, TeacherModelConfig, load_config
from alphazero_llm.models.locate import resolve_device
from alphazero_llm.models.teacher_client import parse_teacher_spec
from alphazero_llm.training.engine import ENGINES
from alphazero_llm.training.run import run
from alphazero_llm.training.settings import settle

logger = logging.getLogger(__name__)


def teacher_spec(spec: str) -> TeacherModelConfig:
    """argparse type for --teacher: a parse error becomes a usage error naming the problem."""
    try:
        return parse_teacher_spec(spec)
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows defaults, except None: those flags say their real default (config or CPU) in their help."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        return action.help if action.default is None else super()._get_help_string(action)


def build_parser(config: Config) -> argparse.ArgumentParser:
    run_cfg, cpu = config.training.run, config.training_on_cpu.run
    parser = argparse.ArgumentParser(
        prog="train_vllm.py",
        description="AlphaZero-style MCTS over reasoning steps + GRPO (or legacy) updates of the student.",
        formatter_class=_HelpFormatter,
    )
    parser.add_argument(
        "--config",
        type=Path,
        default=None,
        help="directory holding models.yaml, teacher_models.yaml, training.yaml (default: shipped)",
    )
    parser.add_argument(
        "--num-examples",
        type=int,
        default=None,
        help="training questions to search and learn from "
        f"(default: {run_cfg.num_examples}; {cpu.num_examples} on CPU)",
    )
    parser.add_argument(
        "--checkpoint-dir",
        type=Path,
        default=None,
        help=f"where checkpoints, metrics and plots go (default: {run_cfg.checkpoint_dir})",
    )
    parser.add_argument(
        "--save-every",
        type=int,
        default=None,
        help=f"examples between checkpoints (default: {run_cfg.save_every}; {cpu.save_every} on CPU)",
    )
    parser.add_argument(
        "--log-interval", type=int, default=None, help=f"examples between log lines (default: {run_cfg.log_interval})"
    )
    parser.add_argument(
        "--keep-last",
        type=int,
        default=None,
        help=f"checkpoints kept, older ones pruned; 0 keeps all (default: {run_cfg.keep_last})",
    )
    loss = parser.add_mutually_exclusive_group()
    loss.add_argument("--use-grpo", action="store_true", help="GRPO loss (clipped ratio + k3 KL)")
    loss.add_argument("--use-legacy", action="store_true", help="legacy reward-weighted NLL loss")
    parser.add_argument("--resume", action="store_true", help="continue from the latest checkpoint")
    parser.add_argument(
        "--eval-size",
        type=int,
        default=None,
        help="GSM8K test questions for the before/after greedy evaluation; -1: all "
        f"(default: {config.training.dataset.num_eval_examples}; "
        f"{config.training_on_cpu.dataset.num_eval_examples} on CPU)",
    )
    parser.add_argument(
        "--eval-split",
        choices=["dev", "test"],
        default=None,
        help="the held-out split evaluated before and after training: dev (drawn from the train split, never "
        f"trained on) while developing, test once per configuration (default: {config.training.evaluation.split})",
    )
    parser.add_argument(
        "--dev-size",
        type=int,
        default=None,
        help="questions of the train split held out as dev, never trained on "
        f"(default: {config.training.dataset.num_dev_examples})",
    )
    parser.add_argument(
        "--rollout",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="value each unfinished leaf by the student's rollout to its answer (about 4.7x the search time on a "
        f"CPU, bench/bench_rollout.py) (default: {'on' if config.training.mcts.rollout else 'off'})",
    )
    parser.add_argument("--seed", type=int, default=None, help=f"(default: {config.training.seed})")
    parser.add_argument(
        "--tier",
        choices=sorted(config.teachers.tiers),
        default=None,
        help=f"teacher tier from teacher_models.yaml (default: {config.teachers.default_tier})",
    )
    parser.add_argument(
        "--teacher",
        action="append",
        default=[],
        type=teacher_spec,
        metavar="SPEC",
        help="an extra OpenAI-compatible teacher (repeatable): "
        "name=N,base_url=URL,model=M,api_key_env=VAR[,provider=P][,price_input_per_mtok=X]",
    )
    parser.add_argument(
        "--student", default=None, help="student hub id, directory or .gguf (default: models.yaml; 'embedded' on CPU)"
    )
    parser.add_argument(
        "--local-teacher",
        action="store_true",
        help="serve the student's own base model on 127.0.0.1 as the only teacher (the default when no key of "
        "the tier's teachers is set and no --teacher is given)",
    )
    parser.add_argument(
        "--reference-teacher",
        choices=["off", "also", "only"],
        default="off",
        help="GSM8K's reference solution as a teacher: its next line is a 'right' step, the line with a number "
        "changed a 'wrong' one. 'also' adds it to the LLM teachers; 'only' makes it the sole teacher (no API key, "
        "no server)",
    )
    parser.add_argument(
        "--dataset-path",
        default=None,
        help="local GSM8K: a directory holding train.jsonl/test.jsonl, or one JSONL file "
        "(default: training.yaml's dataset.path, else $GSM8K_PATH, else the hub)",
    )
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    parser.add_argument(
        "--engine",
        choices=list(ENGINES),
        default="auto",
        help="who samples the search's student steps and rollouts: vLLM (with the student's latest LoRA) or "
        "the transformers student; auto: vllm on CUDA when vLLM is installed (pip install -e '.[vllm]'), else "
        "transformers. Log-probs always come from the transformers student",
    )
    parser.add_argument(
        "--report-to",
        choices=["none", "wandb", "tensorboard"],
        default=None,
        help=f"(default: {run_cfg.report_to})",
    )
    return parser  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # One INFO line per teacher request would bury the training log.
    for noisy in ("httpx", "httpx2", "httpcore"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    probe = argparse.ArgumentParser(add_help=False)
    probe.add_argument("--config", type=Path, default=None)
    known, _ = probe.parse_known_args(argv)
    config = load_config(known.config)
    args = build_parser(config).parse_args(argv)
    for flag in ("num_examples", "save_every", "log_interval"):
        value = getattr(args, flag)
        if value is not None and value <= 0:
            raise SystemExit(f"--{flag.replace('_', '-')} must be positive")
    for flag, low in (("eval_size", -1), ("keep_last", 0), ("dev_size", 0)):
        value = getattr(args, flag)
        if value is not None and value < low:
            raise SystemExit(f"--{flag.replace('_', '-')} must be >= {low}")
    try:
        device = resolve_device(args.device).type
        settings = settle(args, config, device)
    except ValueError as exc:
        raise SystemExit(str(exc)) from exc
    return run(settings)
