"""Shared fixtures: the real GSM8K files, the real embedded SmolLM2 model, a real loopback server.

Tests that need a real part skip with a clear reason when it is absent; CI sets
ALPHAZERO_REQUIRE_REAL_PARTS=1 so that an absent part fails instead of hiding.
"""

from __future__ import annotations

import asyncio
import ipaddress
import os
import shutil
import socket
import sys
import types
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from alphazero_llm import svamp
from alphazero_llm.data import PATH_ENV_VAR
from alphazero_llm.models.embedded import EmbeddedModelMissing, embedded_model_dir
from alphazero_llm.server import LocalServer
from alphazero_llm.testing.fake_vllm import fake_vllm_modules

REPO_ROOT = Path(__file__).resolve().parents[1]
TOY_SEARCH = {"num_iterations": 2, "num_right": 1, "num_wrong": 1, "num_student": 1, "tokens_per_expansion": 12,
              "max_depth": 3}  # fmt: skip


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # any other host name


class NonLoopbackTraffic(RuntimeError):
    """A test tried to reach a host outside 127.0.0.0/8 / ::1."""


@pytest.fixture(autouse=True)
def loopback_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """Refuse, in the test process, any connection or name lookup beyond loopback.

    Subprocesses we start (the server) are kept offline by their own environment.
    """
    real_connect, real_getaddrinfo = socket.socket.connect, socket.getaddrinfo

    def connect(sock: socket.socket, address, *args):
        if sock.family in (socket.AF_INET, socket.AF_INET6) and not is_loopback(str(address[0])):
            raise NonLoopbackTraffic(f"tests may only connect to loopback, not {address!r}")
        return real_connect(sock, address, *args)

    def getaddrinfo(host, *args, **kwargs):
        if host is not None and not is_loopback(host.decode() if isinstance(host, bytes) else str(host)):
            raise NonLoopbackTraffic(f"tests may only resolve loopback names, not {host!r}")
        return real_getaddrinfo(host, *args, **kwargs)

    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)


def missing(reason: str) -> None:
    """Skip, or fail when CI demands every real part."""
    if os.environ.get("ALPHAZERO_REQUIRE_REAL_PARTS") == "1":
        pytest.fail(f"required real part is missing: {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def gsm8k_dir() -> Path:
    """The real GSM8K files (train.jsonl 7473 rows, test.jsonl 1319): $GSM8K_PATH, else ../shared/data/gsm8k."""
    default = REPO_ROOT.parent / "shared" / "data" / "gsm8k"
    path = Path(os.environ.get(PATH_ENV_VAR) or default)
    if not (path / "train.jsonl").is_file() or not (path / "test.jsonl").is_file():
        missing(f"GSM8K files not found in {path} (set {PATH_ENV_VAR} to the directory holding train/test.jsonl)")
    return path


@pytest.fixture(scope="session")
def svamp_file() -> Path:
    """The real SVAMP.json (1,000 records): $SVAMP_PATH (the file or its directory), else ../shared/data/svamp."""
    path = Path(os.environ.get(svamp.PATH_ENV_VAR) or REPO_ROOT.parent / "shared" / "data" / "svamp")
    file = path / svamp.FILE_NAME if path.is_dir() else path
    if not file.is_file():
        missing(f"SVAMP not found at {file} (set {svamp.PATH_ENV_VAR} to SVAMP.json or its directory)")
    return file


@pytest.fixture(scope="session")
def smollm_dir() -> Path:
    """The embedded SmolLM2-135M-Instruct as a safetensors directory (converted once, then cached)."""
    try:
        return embedded_model_dir()
    except EmbeddedModelMissing as exc:
        missing(str(exc))
        raise


@pytest.fixture(scope="session")
def smollm_server(smollm_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalServer]:
    """`transformers serve` with SmolLM2 on 127.0.0.1, on a free port, for the whole session."""
    log_file = tmp_path_factory.mktemp("server") / "server.log"
    with LocalServer(smollm_dir, log_file=log_file) as server:
        yield server


@pytest.fixture(scope="session")
def toy_config(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A `--config` directory: the shipped one with a smaller CPU search and 48-token evaluation answers, so that
    a train_vllm.py run through the real CLI takes seconds per example."""
    out = tmp_path_factory.mktemp("toy_config")
    for name in ("models.yaml", "teacher_models.yaml"):
        shutil.copy(REPO_ROOT / "config" / name, out / name)
    training = yaml.safe_load((REPO_ROOT / "config" / "training.yaml").read_text(encoding="utf-8"))
    training["cpu"]["mcts"].update(TOY_SEARCH)
    training["cpu"]["evaluation"] = {"max_new_tokens": 48}  # a one-question evaluation in seconds, not a minute
    (out / "training.yaml").write_text(yaml.safe_dump(training), encoding="utf-8")
    return out


@pytest.fixture
def fake_vllm(monkeypatch: pytest.MonkeyPatch) -> types.ModuleType:
    """The fake `vllm` of `alphazero_llm.testing.fake_vllm` in `sys.modules` for one test; returns `vllm`."""
    modules = fake_vllm_modules()
    for name, module in modules.items():
        monkeypatch.setitem(sys.modules, name, module)
    return modules["vllm"]


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    """An event loop for a `training.sources.MCTSSource` (a run keeps one for its whole length)."""
    loop = asyncio.new_event_loop()
    yield loop
    loop.close()
