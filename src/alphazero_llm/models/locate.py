"""Where a student comes from: the device it runs on and the files it loads from."""

from __future__ import annotations

from pathlib import Path

import torch

from alphazero_llm.config import ModelsConfig
from alphazero_llm.models.embedded import cache_root, convert_gguf, embedded_model_dir

EMBEDDED = "embedded"


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} was asked for, but CUDA is not available")
    return torch.device(device)


def resolve_model_path(name: str) -> str:
    """`embedded`, a .gguf file (converted once to a cached checkpoint), a directory or a hub id."""
    if name == EMBEDDED:
        return str(embedded_model_dir())
    path = Path(name).expanduser()
    if path.suffix == ".gguf":
        if not path.is_file():
            raise FileNotFoundError(f"{path}: GGUF file not found")
        stat = path.stat()
        out = cache_root() / f"{path.stem}-{stat.st_size:x}-{int(stat.st_mtime):x}"
        return str(out if (out / "config.json").is_file() else convert_gguf(path, out))
    return str(path) if path.is_dir() else name


def default_student_name(config: ModelsConfig, device: str = "auto") -> str:
    """models.yaml's student on CUDA, its CPU student (the embedded SmolLM2 by default) elsewhere."""
    return config.student.name if resolve_device(device).type == "cuda" else config.student.cpu_name
