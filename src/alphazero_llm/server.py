"""A real OpenAI-compatible server on loopback, serving a local model with `transformers serve`.

Used by the tests (vf-eval end to end), by the local quickstart, and as a
stand-in teacher on machines without an API key. It binds 127.0.0.1 only.

    with LocalServer(embedded_model_dir()) as server:
        server.base_url             # http://127.0.0.1:<port>/v1

`transformers serve` needs the `serving` extra of transformers (in our dev extra).

On Linux the server is asked to receive SIGTERM when the thread that started it dies
(`PR_SET_PDEATHSIG`), so that a `kill -9` of a training run does not leave its teacher server
running; start it from a thread that lives as long as you need the server (the main thread).
A `detached` server is the exception: it runs in a session of its own until stopped
(`alphazero-serve --detach` / `--stop`, which keep its pid and log under the cache directory).
"""

from __future__ import annotations

import argparse
import ctypes
import ctypes.util
import logging
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from types import TracebackType

from alphazero_llm.errors import UserError
from alphazero_llm.models.embedded import cache_root, embedded_model_dir

logger = logging.getLogger(__name__)

LOOPBACK = "127.0.0.1"


def free_port(host: str = LOOPBACK) -> int:
    """A TCP port that is free on `host` right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def port_in_use(port: int, host: str = LOOPBACK) -> bool:
    """Whether a socket listens on `host:port`; SO_REUSEADDR as servers set it, so TIME_WAIT is no conflict."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return True
        return False


class ServerStartError(UserError):
    """The port was taken, or the server exited or did not become healthy in time (the message holds its log tail)."""


class LocalServer:
    """`transformers serve MODEL_DIR` on 127.0.0.1, started on enter and stopped on exit."""

    def __init__(
        self,
        model_dir: Path,
        port: int | None = None,
        log_file: Path | None = None,
        startup_timeout_s: float = 300.0,
        continuous_batching: bool = True,
        kv_cache_blocks: int = 256,  # x 32 tokens: 8k tokens of KV cache across all requests in flight
        detached: bool = False,  # its own session, not stopped when this process dies
    ) -> None:
        self.model_dir = Path(model_dir)
        self.port = free_port() if port is None else port
        self.log_file = log_file
        self.startup_timeout_s = startup_timeout_s
        self.continuous_batching = continuous_batching
        self.kv_cache_blocks = kv_cache_blocks
        self.detached = detached
        self._process: subprocess.Popen[bytes] | None = None
        self._log_handle = None
        self._log_start = 0  # where this start's lines begin in an appended log

    @property
    def base_url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}/v1"

    @property
    def pid(self) -> int:
        if self._process is None:
            raise RuntimeError("server not started")
        return self._process.pid

    @property
    def model_name(self) -> str:
        """The model id clients must send: transformers serve names a local model by its path."""
        return str(self.model_dir)

    def command(self) -> list[str]:
        cmd = [
            # transformers' own CLI, its chat streams ended with OpenAI's `data: [DONE]` (transformers_serve.py).
            sys.executable, "-m", "alphazero_llm.transformers_serve", "serve", str(self.model_dir),
            "--host", LOOPBACK, "--port", str(self.port),
        ]  # fmt: skip
        if self.continuous_batching:
            # Left alone, the paged KV cache is sized from the free RAM and grows to many GiB on a
            # CPU (a CI run was OOM-killed at 13.7 GiB); a fixed pool is plenty for a small model.
            cmd += ["--continuous-batching", "--cb-block-size", "32", "--cb-num-blocks", str(self.kv_cache_blocks)]
        return cmd

    def start(self) -> LocalServer:
        if self._process is not None:
            raise RuntimeError("server already started")
        if not (self.model_dir / "config.json").is_file():
            raise FileNotFoundError(f"{self.model_dir}: not a model directory (no config.json)")
        # Checked first: another server on the port would answer the health check in this one's place.
        if port_in_use(self.port):
            raise ServerStartError(f"{LOOPBACK}:{self.port} is already in use")
        # Appended, never truncated: a resumed run keeps the log of the run it continues.
        self._log_handle = self.log_file.open("ab") if self.log_file else subprocess.DEVNULL
        self._log_start = self._log_handle.tell() if self.log_file else 0
        logger.info("Starting transformers serve for %s on %s", self.model_dir, self.base_url)
        # It serves a local directory: nothing to fetch, so no traffic leaves the machine.
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_DISABLE_TELEMETRY": "1"}
        self._process = subprocess.Popen(
            self.command(),
            stdout=self._log_handle,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            start_new_session=self.detached,
            preexec_fn=_die_with_parent() if sys.platform == "linux" and not self.detached else None,
        )
        try:
            self._wait_healthy()
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_healthy(self) -> None:
        deadline = time.monotonic() + self.startup_timeout_s
        health = f"http://{LOOPBACK}:{self.port}/health"
        while time.monotonic() < deadline:
            assert self._process is not None
            if self._process.poll() is not None:
                raise ServerStartError(f"server exited with code {self._process.returncode}{self._log_tail()}")
            try:
                with urllib.request.urlopen(health, timeout=2) as response:
                    if response.status == 200:
                        logger.info("Server ready at %s", self.base_url)
                        return
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            time.sleep(0.5)
        raise ServerStartError(f"server not healthy after {self.startup_timeout_s:.0f}s{self._log_tail()}")

    def _log_tail(self) -> str:
        if self.log_file is None or not self.log_file.is_file():
            return ""
        with self.log_file.open("rb") as handle:
            handle.seek(self._log_start)
            return "; log tail:\n" + handle.read().decode(errors="replace")[-2000:]

    def stop(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        self._process = None
        if self._log_handle not in (None, subprocess.DEVNULL):
            self._log_handle.close()
        self._log_handle = None

    def wait(self) -> int:
        """Block until the server process exits; its exit code."""
        if self._process is None:
            raise RuntimeError("server not started")
        return self._process.wait()

    def __enter__(self) -> LocalServer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def _die_with_parent() -> Callable[[], None]:
    """A `preexec_fn` that makes Linux send SIGTERM to the child when its parent thread dies.

    libc is resolved here, in the parent, so that the child only makes one system call between
    fork and exec (the reason `preexec_fn` is otherwise discouraged in threaded programs).
    """
    prctl = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True).prctl

    def preexec() -> None:
        prctl(PR_SET_PDEATHSIG, signal.SIGTERM)

    return preexec


def main(argv: list[str] | None = None) -> int:
    """`alphazero-serve`: serve a local model (the embedded SmolLM2 by default) on loopback until Ctrl-C.

    With `--detach` it returns once the server answers, leaving it running, and prints the model id to send
    (one line on stdout; logs go to stderr); `--stop` stops that server.
    """
    parser = argparse.ArgumentParser(description=main.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-dir", type=Path, default=None, help="model directory (default: embedded SmolLM2)")
    parser.add_argument("--port", type=int, default=8000)
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument(
        "--detach",
        action="store_true",
        help="start in the background, wait until it answers, print the model id and return "
        "(its pid and log: serve/PORT.pid and serve/PORT.log in the cache directory)",
    )
    mode.add_argument("--stop", action="store_true", help="stop the server that --detach started on --port")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if args.stop:
        return stop_detached(args.port)
    try:
        model_dir = args.model_dir or embedded_model_dir()
        if args.detach:
            return serve_detached(model_dir, args.port)
        with LocalServer(model_dir, port=args.port) as server:
            logger.info("Serving model %r at %s (Ctrl-C stops)", server.model_name, server.base_url)
            try:
                server.wait()
            except KeyboardInterrupt:
                logger.info("Stopping")
    except UserError as exc:  # a taken port, a server that did not start, no embedded model: one line
        logger.error("%s", exc)
        return 1
    return 0


def detached_files(port: int) -> tuple[Path, Path]:
    """The pid file and the log of the server `--detach` starts on `port`."""
    folder = cache_root() / "serve"
    return folder / f"{port}.pid", folder / f"{port}.log"


def serve_detached(model_dir: Path, port: int) -> int:
    """Start a detached server, wait until it answers, write its pid, print its model id on stdout."""
    pid_file, log_file = detached_files(port)
    running = detached_pid(port)
    if running is not None:
        logger.error("a detached server already runs on port %d (pid %d); stop it: alphazero-serve --stop --port %d",
                     port, running, port)  # fmt: skip
        return 1
    pid_file.parent.mkdir(parents=True, exist_ok=True)
    server = LocalServer(model_dir, port=port, log_file=log_file, detached=True).start()
    pid_file.write_text(f"{server.pid}\n", encoding="utf-8")
    logger.info("Serving model %r at %s (pid %d, log %s); stop it: alphazero-serve --stop --port %d",
                server.model_name, server.base_url, server.pid, log_file, port)  # fmt: skip
    print(server.model_name, flush=True)  # the one line on stdout, for `model=$(alphazero-serve --detach)`
    return 0


def detached_pid(port: int) -> int | None:
    """The pid of the detached server on `port`, if its pid file names a live server on that port (Linux /proc)."""
    pid_file, _ = detached_files(port)
    try:
        pid = int(pid_file.read_text(encoding="utf-8"))
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")  # NUL-terminated arguments
    except (OSError, ValueError):  # no pid file, or its process is gone
        return None
    # A zombie's cmdline is empty, and a reused pid names some other program.
    return pid if "\0serve\0" in cmdline and f"\0--port\0{port}\0" in cmdline else None


def stop_detached(port: int, timeout_s: float = 20.0) -> int:
    """Stop the server `--detach` started on `port`: SIGTERM to its session, SIGKILL after `timeout_s`."""
    pid_file, _ = detached_files(port)
    pid = detached_pid(port)
    pid_file.unlink(missing_ok=True)
    if pid is None:
        logger.error("no server started with --detach runs on port %d", port)
        return 1
    os.killpg(pid, signal.SIGTERM)  # its own session: the server and any worker it started
    deadline = time.monotonic() + timeout_s
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    if _alive(pid):
        os.killpg(pid, signal.SIGKILL)
    logger.info("Stopped the server on port %d (pid %d)", port, pid)
    return 0


def _alive(pid: int) -> bool:
    """Whether `pid` is a running process (not a zombie waiting to be reaped); Linux /proc."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"
