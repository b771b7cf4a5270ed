"""What `train_vllm.py` checks before the student loads, so that a mistake costs a second, not a model load.

- `run_directory`: `--checkpoint-dir` is a directory (made if missing) that this process can write;
- `student_source`: `--student` names something loadable (`embedded`, a model directory, a .gguf
  file, or a well-formed hub id);
- `teacher_keys`: every LLM teacher the run will ask has its key in the environment;
- `resume_point`: with `--resume`, the newest good checkpoint (`checkpoint.select_checkpoint`) and
  that it leaves examples to train.

Each raises a `UserError` (or the `MissingApiKeyError` / `CheckpointError` subclass) whose message
names the culprit and the fix. Nothing here writes to the run directory except the probe file of
`run_directory`, which it removes.
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path

from alphazero_llm.errors import UserError
from alphazero_llm.models.keys import resolve_api_key
from alphazero_llm.models.locate import EMBEDDED
from alphazero_llm.training.checkpoint import CheckpointError, find_latest, select_checkpoint
from alphazero_llm.training.settings import RunSettings

logger = logging.getLogger(__name__)


def run_directory(out: Path) -> None:
    """`out` exists (made if missing) as a directory this process can write to."""
    if out.exists() and not out.is_dir():
        raise UserError(f"--checkpoint-dir {out}: exists and is not a directory; give a directory (made if missing)")
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=out):
            pass
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise UserError(f"--checkpoint-dir {out}: cannot write there ({reason}); give a writable directory") from exc


def student_source(name: str) -> None:
    """`name` is `embedded`, an existing model directory or .gguf file, or a well-formed hub id."""
    if name == EMBEDDED:
        return
    path = Path(name).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise UserError(f"--student {name}: a directory without config.json, so not a model directory")
        return
    if path.is_file():
        if path.suffix != ".gguf":
            raise UserError(f"--student {name}: a file, but not a .gguf file; give a model directory or a .gguf file")
        return
    fix = "give a model directory, a .gguf file, a hub id (org/name) or 'embedded'"
    if name.startswith(("/", ".", "~")) or path.suffix == ".gguf" or name.count("/") > 1:
        raise UserError(f"--student {name}: no such file or directory; {fix}")
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(name)
    except HFValidationError as exc:
        raise UserError(f"--student {name}: not a directory, a file or a valid hub id; {fix}") from exc


def teacher_keys(settings: RunSettings, env: Mapping[str, str] | None = None) -> None:
    """Every API teacher of the run has its key set (`MissingApiKeyError` names the variable, never a value)."""
    choice = settings.teachers
    if choice.local:
        return
    teachers = (*(settings.config.teachers.tier(choice.tier) if choice.tier else ()), *choice.extra)
    for teacher in teachers:
        resolve_api_key(teacher, os.environ if env is None else env)


def resume_point(settings: RunSettings) -> Path | None:
    """Where the run starts: None for a fresh run, else the checkpoint to resume (verified)."""
    out, num_examples = settings.checkpoint_dir, settings.training.run.num_examples
    if not settings.resume:
        if find_latest(out) is not None:
            logger.warning("%s holds checkpoints from an earlier run; they will be overwritten (use --resume)", out)
        return None
    selection = select_checkpoint(out)
    if selection.chosen is None or selection.state is None:
        found = "; ".join(f"{path.name}: {reason}" for path, reason in selection.rejected)
        what = f"no good checkpoint in {out} ({found})" if found else f"no checkpoint in {out}"
        if settings.fresh_if_no_checkpoint:
            logger.warning("--resume: %s; starting a fresh run (--fresh-if-no-checkpoint)", what)
            return None
        fix = "to start over, run without --resume (or add --fresh-if-no-checkpoint)"
        if found:
            raise CheckpointError(f"--resume: {what}; {fix}")
        raise UserError(f"--resume: {what}; {fix}")
    if selection.state.step >= num_examples:
        raise UserError(
            f"--resume: {selection.chosen} is at example {selection.state.step} and --num-examples is "
            f"{num_examples}: nothing left to train; pass a larger --num-examples to go on"
        )
    return selection.chosen
