"""train_vllm.py killed with SIGKILL and resumed, as a subprocess: SmolLM2 student, itself as the loopback teacher,
the mini GSM8K. (A whole run and what it writes: tests/test_readme.py, which runs the README's training blocks.)

Slow: each run starts `transformers serve` and searches on a 2-core CPU, with the `toy_config` search
(conftest: the CPU section's, smaller still), so that the wiring, not the search's size, is what takes
the time. The hub is never asked: the dataset path is always given, the student is a local directory,
and the hub libraries run offline.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

REPO_ROOT = Path(__file__).resolve().parents[1]
MINI = REPO_ROOT / "tests" / "fixtures" / "gsm8k_mini"
RUN_BUDGET_S = 600.0


def command(smollm_dir: Path, out: Path, config: Path, *flags: str) -> list[str]:
    return [
        sys.executable, "train_vllm.py", "--config", str(config), "--student", str(smollm_dir), "--local-teacher",
        "--dataset-path", str(MINI), "--dev-size", "2", "--checkpoint-dir", str(out), "--device", "cpu",
        # The wiring, checkpoints and resume are under test here, within the time budget; rollouts (4.7x the
        # search on a CPU) run in test_compare_arms.py, test_policy.py and the search's tests.
        "--no-rollout", *flags,
    ]  # fmt: skip


def offline_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY")}
    return {**env, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "HF_HUB_DISABLE_TELEMETRY": "1"}


def metrics(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text(encoding="utf-8").splitlines()]


def session_members(sid: int) -> list[int]:
    """Live (not zombie) processes of session `sid`, from /proc (Linux)."""
    members = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # the process ended meanwhile
            continue
        if fields[0] != "Z" and int(fields[3]) == sid:  # state, ppid, pgrp, session
            members.append(int(stat.parent.name))
    return members


def test_kill_9_then_resume_loses_at_most_the_example_in_flight(
    smollm_dir: Path, toy_config: Path, tmp_path: Path
) -> None:
    out = tmp_path / "run"
    argv = command(smollm_dir, out, toy_config, "--num-examples", "3", "--save-every", "1", "--eval-size", "0")
    log = (tmp_path / "first.log").open("wb")
    # A session of its own, so that SIGKILL reaches the run and its loopback server and nothing else.
    proc = subprocess.Popen(argv, cwd=REPO_ROOT, env=offline_env(), stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)  # fmt: skip
    try:
        deadline = time.monotonic() + RUN_BUDGET_S
        while not (out / "checkpoint-1" / "meta.json").is_file():
            assert proc.poll() is None, (tmp_path / "first.log").read_text()[-4000:]
            assert time.monotonic() < deadline, "no checkpoint-1 in time"
            time.sleep(0.5)
        # kill -9 of the trainer alone: its loopback teacher server must not outlive it (PR_SET_PDEATHSIG).
        assert len(session_members(proc.pid)) >= 2, "the run and its teacher server should both be running"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        deadline = time.monotonic() + 30
        while session_members(proc.pid) and time.monotonic() < deadline:
            time.sleep(0.5)
        orphans = session_members(proc.pid)
    finally:
        if proc.poll() is None or session_members(proc.pid):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        log.close()
    assert proc.returncode == -signal.SIGKILL
    assert not orphans, f"processes left after kill -9 of the run: {orphans}"
    assert not (out / "checkpoint-3").exists()

    resumed = subprocess.run([*argv, "--resume"], cwd=REPO_ROOT, env=offline_env(), capture_output=True, text=True,
                             timeout=RUN_BUDGET_S)  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr[-4000:]
    assert "resumed from" in resumed.stderr
    for step in (1, 2, 3):
        assert (out / f"checkpoint-{step}" / "meta.json").is_file()
    assert [r["step"] for r in metrics(out)] == [1, 2, 3]
