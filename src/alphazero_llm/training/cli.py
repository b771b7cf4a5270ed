"""Command line of `train_vllm.py`: the seed's flags, with defaults from config/training.yaml.

The search and the training loop land in later milestones; until then `main`
validates the command line and the config and says plainly that it cannot train.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from alphazero_llm.config import Config, ConfigError, TeacherModelConfig, load_config
from alphazero_llm.models.teacher_client import parse_teacher_spec

logger = logging.getLogger(__name__)


def teacher_spec(spec: str) -> TeacherModelConfig:
    """argparse type for --teacher: a parse error becomes a usage error naming the problem."""
    try:
        return parse_teacher_spec(spec)
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def build_parser(config: Config) -> argparse.ArgumentParser:
    run = config.training.run
    parser = argparse.ArgumentParser(
        prog="train_vllm.py",
        description="AlphaZero-style MCTS over reasoning steps + GRPO (or legacy) updates of the student.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "--config",
        type=Path,
        default=None,
        help="directory holding models.yaml, teacher_models.yaml, training.yaml (default: shipped)",
    )
    parser.add_argument(
        "--num-examples", type=int, default=run.num_examples, help="training questions to search and learn from"
    )
    parser.add_argument(
        "--checkpoint-dir", type=Path, default=Path(run.checkpoint_dir), help="where checkpoints, metrics and plots go"
    )
    parser.add_argument("--save-every", type=int, default=run.save_every, help="examples between checkpoints")
    parser.add_argument("--log-interval", type=int, default=run.log_interval, help="examples between log lines")
    loss = parser.add_mutually_exclusive_group()
    loss.add_argument("--use-grpo", action="store_true", help="GRPO loss (clipped ratio + k3 KL)")
    loss.add_argument("--use-legacy", action="store_true", help="legacy reward-weighted NLL loss")
    parser.add_argument("--resume", action="store_true", help="continue from the latest checkpoint")
    parser.add_argument(
        "--eval-size",
        type=int,
        default=config.training.dataset.num_eval_examples,
        help="GSM8K test questions for the before/after greedy evaluation",
    )
    parser.add_argument("--seed", type=int, default=config.training.seed)
    parser.add_argument(
        "--tier",
        choices=sorted(config.teachers.tiers),
        default=config.teachers.default_tier,
        help="teacher tier from teacher_models.yaml",
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
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    parser.add_argument("--report-to", choices=["none", "wandb", "tensorboard"], default=run.report_to)
    return parser  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    probe = argparse.ArgumentParser(add_help=False)
    probe.add_argument("--config", type=Path, default=None)
    known, _ = probe.parse_known_args(argv)
    args = build_parser(load_config(known.config)).parse_args(argv)
    for flag in ("num_examples", "save_every", "log_interval"):
        if getattr(args, flag) <= 0:
            raise SystemExit(f"--{flag.replace('_', '-')} must be positive")
    logger.error(
        "Training is not implemented yet: the MCTS search and the GRPO loop are the next milestones. "
        "Use `vf-eval alphazero-llm-trainer` to evaluate a model now."
    )
    return 2
