"""Command line of `train_vllm.py` (console script `train-vllm`): the seed's flags, and how errors reach a person.

Every flag that has a config key defaults to None here, so that an explicit flag can be told from a
default: `settings.settle` lays the flags over the config (and its CPU overlay on a CPU), once. The
help texts show the config's values. `training.run` then checks what it can before the model loads,
builds the parts and trains.

Start-up is light: this module imports neither torch nor transformers, so `--help` and every usage
error answer at once; the run's modules are imported after the arguments parse. An error a user can
fix (`errors.UserError`, a config or data `ValueError`, an `OSError` on a path they gave) is printed
as one line naming the culprit and the fix, with every secret masked (`redact`), and the exit code
is 1; `--debug` shows the traceback instead. Anything else is a bug and keeps its traceback. Under torchrun,
either kind is also written where the launcher reads a failed rank's error (`_tell_launcher`), so its failure
summary names the rank and the error, not only an exit code.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
import traceback
from pathlib import Path
from typing import NoReturn

from alphazero_llm.config import Config, ConfigError, TeacherModelConfig, load_config
from alphazero_llm.errors import UserError
from alphazero_llm.models.keys import parse_teacher_spec
from alphazero_llm.redact import redact
from alphazero_llm.training.engine import ENGINES

logger = logging.getLogger(__name__)

PROG = "train_vllm.py"
USER_ERRORS = (UserError, ValueError, OSError)
EXIT_ERROR = 1
EXIT_USAGE = 2  # argparse's code
EXIT_INTERRUPTED = 130
# torchrun gives each rank a file to write its error to, and prints it in the failure summary (torch's `@record`).
LAUNCHER_ERROR_FILE = "TORCHELASTIC_ERROR_FILE"


def teacher_spec(spec: str) -> TeacherModelConfig:
    """argparse type for --teacher: a parse error becomes a usage error naming the problem."""
    try:
        return parse_teacher_spec(spec)
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


class _Parser(argparse.ArgumentParser):
    """A usage error is two lines, the culprit and where the flags are listed, not the whole usage block."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {redact(message)}\n({self.prog} --help lists the flags)\n")


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows defaults, except None: those flags say their real default (config or CPU) in their help."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        return action.help if action.default is None else super()._get_help_string(action)


def build_parser(config: Config) -> argparse.ArgumentParser:
    run_cfg, cpu = config.training.run, config.training_on_cpu.run
    parser = _Parser(
        prog=PROG,
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
    parser.add_argument(
        "--save-trees-every",
        type=int,
        default=None,
        help="every search's tree is saved as <checkpoint-dir>/trees/example-<step>.json; an HTML page too "
        f"for example 1 and every Nth; 0: no HTML pages (default: {run_cfg.save_trees_every})",
    )
    loss = parser.add_mutually_exclusive_group()
    loss.add_argument("--use-grpo", action="store_true", help="GRPO loss (clipped ratio + k3 KL)")
    loss.add_argument("--use-legacy", action="store_true", help="legacy reward-weighted NLL loss")
    parser.add_argument(
        "--resume",
        action="store_true",
        help="continue from the newest good checkpoint (a corrupt newer one is skipped, with a warning); an "
        "error when there is none, unless --fresh-if-no-checkpoint",
    )
    parser.add_argument(
        "--fresh-if-no-checkpoint",
        action="store_true",
        help="with --resume: start a fresh run when the checkpoint directory holds no good checkpoint",
    )
    parser.add_argument(
        "--eval-size",
        type=int,
        default=None,
        help="held-out questions (of --eval-split) for the before/after greedy evaluation; -1: all "
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
        "--continue-without-teachers",
        action="store_true",
        help="when every LLM teacher has been taken out of the run (bad key, no credit, unreachable), go on with "
        "the student alone (and the reference teacher, if any) instead of stopping with an error",
    )
    parser.add_argument(
        "--reference-teacher",
        choices=["off", "also", "only"],
        default="off",
        help="the data set's reference solution as a teacher: its next line is a 'right' step, the line with a number "
        "changed a 'wrong' one. 'also' adds it to the LLM teachers; 'only' makes it the sole teacher (no API key, "
        "no server)",
    )
    parser.add_argument(
        "--source",
        choices=["mcts", "sample", "sft"],
        default=None,
        help="where each example's trajectories come from: mcts (the tree search with teachers), sample (plain "
        "GRPO: sample.group_size answers of the student, no tree, no teachers) or sft (the reference solution, "
        f"legacy NLL loss) (default: {run_cfg.source})",
    )
    parser.add_argument(
        "--dataset",
        choices=["gsm8k", "svamp"],
        default=None,
        help="the data set trained on and evaluated; svamp's 599 / 100 / 300 train / dev / test split is drawn "
        f"from its one file (default: {config.training.dataset.kind})",
    )
    parser.add_argument(
        "--dataset-path",
        default=None,
        help="local GSM8K: a directory holding train.jsonl and test.jsonl, or a pattern naming each split's file "
        "(data/gsm8k_{split}.jsonl) (default: training.yaml's dataset.path, else $GSM8K_PATH, else the hub); "
        "local SVAMP: SVAMP.json or its directory (default: $SVAMP_PATH)",
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
    parser.add_argument("--debug", action="store_true", help="show tracebacks, and debug logging")
    return parser  # fmt: skip


def config_directory(path: Path | None) -> Path | None:
    """`--config`: a directory of models.yaml, teacher_models.yaml and training.yaml; a file is a clear error."""
    if path is None or path.is_dir():
        return path
    if path.is_file():
        raise ConfigError(
            f"--config {path}: a file; --config takes the directory that holds models.yaml, teacher_models.yaml "
            f"and training.yaml (here: --config {path.parent})"
        )
    raise ConfigError(f"--config {path}: no such directory")


def parse_args(argv: list[str] | None) -> tuple[argparse.Namespace, Config]:
    """The flags and the config they refer to. A usage error exits with argparse's code 2."""
    probe = argparse.ArgumentParser(add_help=False)
    probe.add_argument("--config", type=Path, default=None)
    known, _ = probe.parse_known_args(argv)
    try:
        config = load_config(config_directory(known.config))
    except ConfigError as exc:
        _print_error(exc)
        raise SystemExit(EXIT_USAGE) from None
    parser = build_parser(config)
    args = parser.parse_args(argv)
    for flag in ("num_examples", "save_every", "log_interval"):
        value = getattr(args, flag)
        if value is not None and value <= 0:
            parser.error(f"--{flag.replace('_', '-')} must be positive")
    for flag, low in (("eval_size", -1), ("keep_last", 0), ("save_trees_every", 0), ("dev_size", 0)):
        value = getattr(args, flag)
        if value is not None and value < low:
            parser.error(f"--{flag.replace('_', '-')} must be >= {low}")
    if args.fresh_if_no_checkpoint and not args.resume:
        parser.error("--fresh-if-no-checkpoint only applies with --resume")
    return args, config


def main(argv: list[str] | None = None) -> int:
    args, config = parse_args(argv)
    _configure_logging(args.debug)
    try:
        # The run's modules import torch and transformers: only now that the arguments are known to be good.
        from alphazero_llm.models.locate import resolve_device
        from alphazero_llm.training.run import run
        from alphazero_llm.training.settings import settle

        try:
            settings = settle(args, config, resolve_device(args.device).type)
        except ValueError as exc:  # flags that contradict each other or the machine: a usage error
            _print_error(exc)
            return EXIT_USAGE
        return run(settings)
    except USER_ERRORS as exc:
        _tell_launcher(exc)
        if args.debug:
            raise
        _print_error(exc)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted; --resume continues from the newest checkpoint", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as exc:
        _tell_launcher(exc)
        raise


def _print_error(exc: BaseException) -> None:
    """One line that names the culprit (the exception's message) and how to see more; secrets masked."""
    message = redact(str(exc) or type(exc).__name__)
    print(f"{PROG}: error: {message}\n(--debug shows the traceback)", file=sys.stderr)


def _tell_launcher(exc: BaseException) -> None:
    """Under torchrun: write `exc` to this rank's error file, in the format of torch's `@record`, so the launcher's
    failure summary shows the error and its traceback beside the rank. Secrets masked. Call from `except`."""
    path = os.environ.get(LAUNCHER_ERROR_FILE)
    if not path:
        return
    error = {
        "message": {
            "message": redact(f"{type(exc).__name__}: {exc}"),
            "extraInfo": {"py_callstack": redact(traceback.format_exc()), "timestamp": str(int(time.time()))},
        }
    }
    try:
        Path(path).write_text(json.dumps(error), encoding="utf-8")
    except OSError as write_error:  # never hide the run's own error behind this one
        logger.warning("could not write the launcher's error file %s: %s", path, write_error)


def _configure_logging(debug: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if debug else logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    # One INFO line per teacher request would bury the training log.
    for noisy in ("httpx", "httpx2", "httpcore"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
