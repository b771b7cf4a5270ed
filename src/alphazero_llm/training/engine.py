"""Who samples the search's student steps in a run (`--engine`), and keeping vLLM's adapter the student's.

`choose_engine` maps `--engine {auto,transformers,vllm}`, the device and whether vLLM is installed to an
`EngineChoice` (pure, so that the mapping is testable without CUDA): auto takes vLLM on CUDA when it is
installed, else transformers; an explicit `vllm` that cannot run is a usage error naming the fix.

With vLLM, one `VLLMEngine` serves the student's base model beside the transformers student, and
`VLLMAdapterSync` keeps it serving the student's current LoRA: before a search, when the trainer's
update count differs from the one last synced (always before the first search, so a fresh run
serves the initial adapter and a resumed one the checkpoint's), it saves the student's adapter into
one run-local directory and calls `engine.set_adapter`, which takes a new adapter id so that vLLM
reads the new weights.
"""

from __future__ import annotations

import importlib.util
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from alphazero_llm.config import ModelsConfig

if TYPE_CHECKING:
    from alphazero_llm.models.student import StudentModel
    from alphazero_llm.models.vllm_engine import VLLMEngine

logger = logging.getLogger(__name__)

ENGINES = ("auto", "transformers", "vllm")
# Under --checkpoint-dir: the student's adapter as vLLM last loaded it (rewritten at each sync).
VLLM_ADAPTER_DIR = "vllm_adapter"


def install_fix() -> str:
    """How to install vLLM. Imported here, not at the top: `vllm_engine` imports torch, and `--help` must not."""
    from alphazero_llm.models.vllm_engine import VLLM_INSTALL_HINT

    return f"pip install -e '.[vllm]' in a checkout, or {VLLM_INSTALL_HINT}"


@dataclass(frozen=True)
class EngineChoice:
    """Who samples the search's student proposals and rollouts, and why (for the log)."""

    name: Literal["transformers", "vllm"]
    reason: str


def vllm_installed() -> bool:
    """Whether `import vllm` would find it (without importing it: it is slow and initialises CUDA)."""
    try:
        return importlib.util.find_spec("vllm") is not None
    except ValueError:  # already imported, without a spec (a test's fake module): importable
        return True


def choose_engine(requested: str, device: str, has_vllm: bool) -> EngineChoice:
    """`--engine` on `device` ("cpu" or "cuda"); a ValueError when an explicit vllm cannot run."""
    if requested == "transformers":
        return EngineChoice("transformers", "--engine transformers")
    if requested == "vllm":
        if device != "cuda":
            raise ValueError(
                f"--engine vllm needs a CUDA GPU, but the device is {device}: use --engine transformers or auto"
            )
        if not has_vllm:
            raise ValueError(f"--engine vllm: vLLM is not installed; install it with {install_fix()}")
        return EngineChoice("vllm", "--engine vllm")
    if requested != "auto":
        raise ValueError(f"--engine must be one of {', '.join(ENGINES)}, not {requested!r}")
    if device != "cuda":
        return EngineChoice("transformers", f"--engine auto on {device}: vLLM needs CUDA")
    if not has_vllm:
        return EngineChoice("transformers", f"--engine auto: vLLM is not installed ({install_fix()})")
    return EngineChoice("vllm", "--engine auto: CUDA and vLLM are available")


def start_engine(
    choice: EngineChoice, student_name: str, student: StudentModel, config: ModelsConfig, seed: int
) -> VLLMEngine | None:
    """The run's vLLM engine on the student's base model (models.yaml's `vllm` section), or None."""
    logger.info("student steps sampled by %s (%s)", choice.name, choice.reason)
    if choice.name != "vllm":
        return None
    from alphazero_llm.models.vllm_engine import VLLMEngine

    return VLLMEngine(student_name, student, config, seed=seed)


class VLLMAdapterSync:
    """Saves the student's adapter and points the engine at it whenever the policy changed (module docstring).

    `version` says which policy the student holds: the trainer's update count, wired by `run` once the
    Trainer exists. None synced yet means the first `sync` always saves and loads.
    """

    def __init__(self, student: StudentModel, engine: VLLMEngine, directory: Path) -> None:
        self.student = student
        self.engine = engine
        self.directory = Path(directory)
        self.version: Callable[[], int] = lambda: 0
        self.synced: int | None = None

    def sync(self) -> bool:
        """Bring the engine's adapter up to date; True when it was reloaded."""
        version = self.version()
        if version == self.synced:
            return False
        self.student.save_adapter(self.directory)
        self.engine.set_adapter(self.directory)
        logger.debug("vLLM serves the student's adapter after %d update(s)", version)
        self.synced = version
        return True
