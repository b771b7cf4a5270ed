"""Checkpoints: written atomically, loaded safely, found again after a crash.

Layout under a root directory:

    root/checkpoint-<step>/adapter/            LoRA adapter, PEFT format (safetensors)
                          trainer_state.pt     optimizer + scheduler state dicts, torch CPU/CUDA RNG
                          rng.json             python random.Random state, numpy global RNG state
                          sampler.json         epoch, index, order
                          teacher_bandit.json  the teacher bandit's state
                          metrics.jsonl        one JSON object per logged example so far
                          meta.json            format version, step, sha256 of every file (written last)
    root/latest                                "checkpoint-<step>", replaced atomically

A checkpoint is built in a temporary directory beside its final name and renamed
into place, so the final name never holds a half-written checkpoint and a crash
mid-write leaves the previous one (and `latest`) intact. Loading uses
`torch.load(weights_only=True)`, safetensors (via the student) and `json` only,
and checks each file against the sha256 in meta.json, so a truncated or corrupt
file is reported by name rather than half-loaded.

Nothing from the environment is written; as a second guard, JSON files that
would contain the value of a secret-looking environment variable are refused.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import random
import re
import shutil
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch

from alphazero_llm.errors import UserError
from alphazero_llm.redact import secret_values

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1
LATEST = "latest"
PREFIX = "checkpoint-"
ADAPTER_DIR = "adapter"
_CHECKPOINT_RE = re.compile(rf"^{PREFIX}(\d+)$")


class CheckpointError(UserError):
    """A checkpoint that is missing, incomplete, corrupt or of an unknown format; names the file."""


class AdapterSaver(Protocol):
    def save_adapter(self, directory: Path) -> None: ...


class AdapterLoader(Protocol):
    def load_adapter(self, directory: Path) -> None: ...


@dataclass(frozen=True)
class SamplerState:
    """Where the without-replacement question sampler stands: `order[index]` is the next question."""

    epoch: int
    index: int
    order: tuple[int, ...]


@dataclass(frozen=True)
class RngState:
    python: tuple[Any, ...]  # random.Random.getstate()
    torch_cpu: torch.Tensor
    torch_cuda: tuple[torch.Tensor, ...] = ()  # one per device; empty without CUDA
    numpy: tuple[Any, ...] | None = None  # numpy.random.get_state(), as plain lists


@dataclass(frozen=True)
class CheckpointState:
    step: int
    optimizer: dict[str, Any]
    scheduler: dict[str, Any]
    rng: RngState
    sampler: SamplerState
    teacher_bandit: dict[str, Any] = field(default_factory=dict)
    metrics: tuple[dict[str, Any], ...] = ()


# --- RNG -----------------------------------------------------------------------------------------


def capture_rng(rng: random.Random) -> RngState:
    """The run's python RNG plus torch's (and numpy's, when imported) global generators."""
    cuda = tuple(torch.cuda.get_rng_state_all()) if torch.cuda.is_available() else ()
    return RngState(python=rng.getstate(), torch_cpu=torch.get_rng_state(), torch_cuda=cuda, numpy=_numpy_state())


def restore_rng(state: RngState, rng: random.Random) -> None:
    """Put `state` back into `rng` and the global torch / CUDA / numpy generators."""
    rng.setstate(state.python)
    torch.set_rng_state(state.torch_cpu)
    if state.torch_cuda:
        if torch.cuda.is_available() and torch.cuda.device_count() == len(state.torch_cuda):
            torch.cuda.set_rng_state_all(list(state.torch_cuda))
        else:
            logger.warning("checkpoint has CUDA RNG states for %d device(s); not restored here", len(state.torch_cuda))
    if state.numpy is not None:
        import numpy as np  # only when the checkpoint has a numpy state, i.e. numpy was in use

        np.random.set_state(state.numpy)


def _numpy_state() -> tuple[Any, ...] | None:
    import sys

    np = sys.modules.get("numpy")  # only record numpy's RNG if something loaded numpy
    if np is None:
        return None
    name, keys, pos, has_gauss, cached = np.random.get_state()
    return (name, np.asarray(keys), int(pos), int(has_gauss), float(cached))


# --- saving --------------------------------------------------------------------------------------


def checkpoint_dir(root: Path, step: int) -> Path:
    return Path(root) / f"{PREFIX}{step}"


def save_checkpoint(
    root: Path,
    state: CheckpointState,
    student: AdapterSaver | Callable[[Path], None],
    keep_last: int | None = None,
) -> Path:
    """Write `state` and the student's adapter as root/checkpoint-<step>, atomically; point `latest` at it.

    `student` is anything with `save_adapter(directory)` (a StudentModel) or such a callable.
    `keep_last`: when set, older checkpoint-* directories beyond the newest K are removed.
    Returns the checkpoint directory.
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    save_adapter = student.save_adapter if hasattr(student, "save_adapter") else student
    final = checkpoint_dir(root, state.step)
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{final.name}-", dir=root))
    try:
        save_adapter(tmp / ADAPTER_DIR)
        _write_bytes(tmp / "trainer_state.pt", _torch_bytes(state))
        python_state = list(state.rng.python)
        numpy_state = None
        if state.rng.numpy is not None:
            name, keys, pos, has_gauss, cached = state.rng.numpy
            numpy_state = [name, [int(k) for k in keys], pos, has_gauss, cached]
        _write_json(tmp / "rng.json", {"python": python_state, "numpy": numpy_state})
        _write_json(tmp / "sampler.json", {**vars(state.sampler), "order": list(state.sampler.order)})
        _write_json(tmp / "teacher_bandit.json", state.teacher_bandit)
        write_text_atomic(tmp / "metrics.jsonl", "".join(_json_text(m, "metrics.jsonl") + "\n" for m in state.metrics))
        files = {p.relative_to(tmp).as_posix(): sha256_file(p) for p in sorted(tmp.rglob("*")) if p.is_file()}
        _fsync_tree(tmp)
        # meta.json last: its presence is what makes a directory a checkpoint.
        _write_json(tmp / "meta.json", {"format_version": FORMAT_VERSION, "step": state.step, "files": files})
        _fsync_dir(tmp)
        _move_into_place(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    write_text_atomic(root / LATEST, final.name + "\n")
    logger.info("checkpoint written: %s", final)
    if keep_last is not None:
        _prune(root, keep_last, protect=final)
    return final


def _torch_bytes(state: CheckpointState) -> bytes:
    buffer = io.BytesIO()
    torch.save(
        {
            "optimizer": state.optimizer,
            "scheduler": state.scheduler,
            "torch_cpu_rng": state.rng.torch_cpu,
            "torch_cuda_rng": list(state.rng.torch_cuda),
        },
        buffer,
    )
    return buffer.getvalue()


def _move_into_place(tmp: Path, final: Path) -> None:
    if not final.exists():
        os.replace(tmp, final)
        _fsync_dir(final.parent)
        return
    # Re-saving a step (e.g. after a resume): move the old one aside first, since a directory rename
    # cannot replace a non-empty directory. Between the two renames `find_latest` falls back to a scan.
    old = final.with_name(f".old-{final.name}-{os.getpid()}")
    os.replace(final, old)
    os.replace(tmp, final)
    _fsync_dir(final.parent)
    shutil.rmtree(old, ignore_errors=True)


def _prune(root: Path, keep_last: int, protect: Path) -> None:
    if keep_last < 1:
        raise ValueError(f"keep_last must be >= 1, got {keep_last}")
    steps = sorted(_checkpoint_steps(root), reverse=True)
    for step in steps[keep_last:]:
        path = checkpoint_dir(root, step)
        if path != protect:
            shutil.rmtree(path, ignore_errors=True)
            logger.info("removed old checkpoint %s", path)


# --- finding and loading -------------------------------------------------------------------------


def find_latest(root: Path) -> Path | None:
    """The newest complete checkpoint under `root`: the one `latest` names, else the highest step with meta.json."""
    root = Path(root)
    pointer = root / LATEST
    if pointer.is_file():
        name = pointer.read_text(encoding="utf-8").strip()
        if _CHECKPOINT_RE.match(name) and (root / name / "meta.json").is_file():
            return root / name
        logger.warning("%s names %r, which is not a complete checkpoint; scanning %s", pointer, name, root)
    steps = sorted(_checkpoint_steps(root))
    return checkpoint_dir(root, steps[-1]) if steps else None


@dataclass(frozen=True)
class Selection:
    """The checkpoint a resume starts from (None: no good one) and the newer ones skipped, with why."""

    chosen: Path | None
    state: CheckpointState | None
    rejected: tuple[tuple[Path, str], ...]


def select_checkpoint(root: Path) -> Selection:
    """The newest checkpoint under `root` that loads and verifies (every file against meta.json's sha256).

    Candidates, newest first: the one `latest` names, then every `checkpoint-*` by step. A corrupt or
    incomplete one is skipped with a warning naming it and the one used instead. Reads only: nothing
    under `root` is changed.
    """
    root = Path(root)
    latest = find_latest(root)
    candidates = ([latest] if latest is not None else []) + [
        path for _, path in reversed(list_checkpoints(root)) if path != latest
    ]
    rejected: list[tuple[Path, str]] = []
    for path in candidates:
        try:
            state = load_checkpoint(path)
        except CheckpointError as exc:
            rejected.append((path, str(exc)))
            continue
        for bad, reason in rejected:
            logger.warning("checkpoint %s is unusable (%s); resuming from %s instead", bad.name, reason, path.name)
        return Selection(path, state, tuple(rejected))
    return Selection(None, None, tuple(rejected))


def list_checkpoints(root: Path) -> list[tuple[int, Path]]:
    """Every complete checkpoint under `root` as (example step, directory), oldest first."""
    return [(step, checkpoint_dir(root, step)) for step in sorted(_checkpoint_steps(Path(root)))]


def _checkpoint_steps(root: Path) -> list[int]:
    if not root.is_dir():
        return []
    out = []
    for child in root.iterdir():
        match = _CHECKPOINT_RE.match(child.name)
        if match and (child / "meta.json").is_file():
            out.append(int(match.group(1)))
    return out


def load_checkpoint(directory: Path, student: AdapterLoader | Callable[[Path], None] | None = None) -> CheckpointState:
    """Read and verify a checkpoint; with `student`, also load its adapter (safetensors) into it."""
    directory = Path(directory)
    meta_path = directory / "meta.json"
    meta = _read_json(meta_path)
    if not isinstance(meta, dict) or meta.get("format_version") != FORMAT_VERSION:
        version = meta.get("format_version") if isinstance(meta, dict) else None
        raise CheckpointError(f"{meta_path}: format_version {version!r}, expected {FORMAT_VERSION}")
    files, step = meta.get("files"), meta.get("step")
    if not isinstance(files, dict) or not isinstance(step, int):
        raise CheckpointError(f"{meta_path}: no 'files' digests or 'step' (corrupt)")
    # Every other file is checked against its digest here, so only meta.json itself can be malformed.
    for relative, digest in files.items():
        path = directory / relative
        if not path.is_file():
            raise CheckpointError(f"{path}: missing (checkpoint incomplete)")
        if sha256_file(path) != digest:
            raise CheckpointError(f"{path}: contents do not match the sha256 in {meta_path} (corrupt)")
    trainer_path = directory / "trainer_state.pt"
    try:
        trainer = torch.load(trainer_path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types on a bad file; name the file in one error
        raise CheckpointError(f"{trainer_path}: cannot be loaded with weights_only=True: {exc}") from exc
    rng_json = _read_json(directory / "rng.json")
    sampler = _read_json(directory / "sampler.json")
    numpy_state = rng_json["numpy"]
    python_state = rng_json["python"]
    state = CheckpointState(
        step=step,
        optimizer=trainer["optimizer"],
        scheduler=trainer["scheduler"],
        rng=RngState(
            # random.Random.setstate needs (int, tuple[int, ...], float | None).
            python=(python_state[0], tuple(python_state[1]), python_state[2]),
            torch_cpu=trainer["torch_cpu_rng"],
            torch_cuda=tuple(trainer["torch_cuda_rng"]),
            numpy=None if numpy_state is None else _numpy_tuple(numpy_state),
        ),
        sampler=SamplerState(epoch=sampler["epoch"], index=sampler["index"], order=tuple(sampler["order"])),
        teacher_bandit=_read_json(directory / "teacher_bandit.json"),
        metrics=tuple(_read_jsonl(directory / "metrics.jsonl")),
    )
    if student is not None:
        load_adapter = student.load_adapter if hasattr(student, "load_adapter") else student
        load_adapter(directory / ADAPTER_DIR)
    return state


def _numpy_tuple(values: Sequence[Any]) -> tuple[Any, ...]:
    import numpy as np

    name, keys, pos, has_gauss, cached = values
    return (name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached)


# --- small file helpers --------------------------------------------------------------------------


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise CheckpointError(f"{path}: missing (checkpoint incomplete)") from exc
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{path}: not valid JSON: {exc}") from exc


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
        return [json.loads(line) for line in lines if line.strip()]
    except FileNotFoundError as exc:
        raise CheckpointError(f"{path}: missing (checkpoint incomplete)") from exc
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{path}: not valid JSON lines: {exc}") from exc


def _json_text(value: Any, name: str) -> str:
    text = json.dumps(value, sort_keys=True, allow_nan=True)
    _refuse_secrets(text, name)
    return text


def _refuse_secrets(text: str, name: str) -> None:
    for var, secret in secret_values():
        if secret in text:
            raise CheckpointError(f"{name}: would contain the value of ${var}; refusing to write a secret")


def _write_json(path: Path, value: Any) -> None:
    write_text_atomic(path, _json_text(value, path.name) + "\n")


def write_text_atomic(path: Path, text: str) -> None:
    """Write `text` so that `path` is never half-written (a crash leaves the old file or the new one)."""
    _write_bytes(path, text.encode("utf-8"))


def _write_bytes(path: Path, data: bytes) -> None:
    """Write via a temporary file in the same directory and os.replace, so `path` is never half-written."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def sha256_file(path: Path) -> str:
    """The SHA-256 of a file, read in blocks: how a checkpoint, and every report of an evaluated adapter, names it."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _fsync_tree(directory: Path) -> None:
    # The adapter files come from PEFT, which does not fsync; a power loss must not leave them empty.
    for path in directory.rglob("*"):
        if path.is_file():
            with path.open("rb") as handle:
                os.fsync(handle.fileno())


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
