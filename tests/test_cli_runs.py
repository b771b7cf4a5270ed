"""train_vllm.py runs through the real CLI: `--seed` reproduces a run byte for byte, and a run whose teachers
are all gone stops.

The embedded SmolLM2 student, the mini GSM8K, and a toy search (a `--config` directory whose CPU section is
smaller still), so that each run takes seconds. With `--reference-teacher only` (no server, no key):
- two runs with the same flags end with byte-identical adapters;
- a run killed with SIGKILL after its first checkpoint and resumed ends with the same adapter, and its
  metrics.jsonl has one line per example;
- a resume whose newest checkpoint is corrupt falls back to the one before, says so, and still ends
  with the same adapter and metrics, with nothing lost.

With one LLM teacher that answers 401 (a fake OpenAI server on loopback): the run exits 1 naming it and
why, unless `--continue-without-teachers`, and then metrics.jsonl records it as out of the run.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_train_cli import MINI, REPO_ROOT, offline_env

from alphazero_llm.testing.fake_openai import FakeOpenAIServer, Reply

pytestmark = pytest.mark.slow

NUM_EXAMPLES = 3
RUN_TIMEOUT_S = 300


def command(smollm_dir: Path, config: Path, out: Path, *flags: str, teacher: str = "--reference-teacher") -> list[str]:
    teachers = ["--reference-teacher", "only"] if teacher == "--reference-teacher" else ["--teacher", teacher]
    return [
        sys.executable, "train_vllm.py", "--config", str(config), "--student", str(smollm_dir), *teachers,
        "--dataset-path", str(MINI), "--dev-size", "2", "--device", "cpu", "--no-rollout", "--eval-size", "0",
        "--num-examples", str(NUM_EXAMPLES), "--save-every", "1", "--seed", "7", "--checkpoint-dir", str(out), *flags,
    ]  # fmt: skip


def train(cmd: list[str]) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(cmd, cwd=REPO_ROOT, env=offline_env(), capture_output=True, text=True, timeout=RUN_TIMEOUT_S)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return proc


def adapter_digest(out: Path) -> str:
    weights = out / f"checkpoint-{NUM_EXAMPLES}" / "adapter" / "adapter_model.safetensors"
    return hashlib.sha256(weights.read_bytes()).hexdigest()


def steps(out: Path) -> list[int]:
    return [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text(encoding="utf-8").splitlines()]


def kill_after_first_checkpoint(cmd: list[str]) -> None:
    proc = subprocess.Popen(cmd, cwd=REPO_ROOT, env=offline_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    out = Path(cmd[cmd.index("--checkpoint-dir") + 1])
    deadline = time.monotonic() + RUN_TIMEOUT_S
    try:
        while not (out / "checkpoint-1" / "meta.json").is_file():
            assert proc.poll() is None, proc.stderr.read().decode()[-4000:] if proc.stderr else ""
            assert time.monotonic() < deadline, "no first checkpoint in time"
            time.sleep(0.05)
        proc.kill()  # SIGKILL: no handler runs, nothing is flushed
    finally:
        proc.wait()
    assert not (out / f"checkpoint-{NUM_EXAMPLES}").exists(), "the run finished before it was killed"


def test_same_seed_same_adapter_straight_killed_and_resumed(smollm_dir: Path, toy_config: Path, tmp_path: Path) -> None:
    first, second, killed = tmp_path / "first", tmp_path / "second", tmp_path / "killed"
    train(command(smollm_dir, toy_config, first))
    train(command(smollm_dir, toy_config, second))
    assert adapter_digest(first) == adapter_digest(second)
    assert steps(first) == steps(second) == [1, 2, 3]

    kill_after_first_checkpoint(command(smollm_dir, toy_config, killed))
    train(command(smollm_dir, toy_config, killed, "--resume"))
    assert adapter_digest(killed) == adapter_digest(first)
    assert steps(killed) == [1, 2, 3]

    # The newest checkpoint corrupt: the resume falls back to checkpoint-2, retrains example 3, loses nothing.
    fallback = tmp_path / "fallback"
    shutil.copytree(first, fallback)
    state = fallback / f"checkpoint-{NUM_EXAMPLES}" / "trainer_state.pt"
    state.write_bytes(state.read_bytes()[:-64])
    proc = train(command(smollm_dir, toy_config, fallback, "--resume"))
    assert f"checkpoint checkpoint-{NUM_EXAMPLES} is unusable" in proc.stderr
    assert f"resuming from checkpoint-{NUM_EXAMPLES - 1} instead" in proc.stderr
    assert adapter_digest(fallback) == adapter_digest(first)
    assert steps(fallback) == [1, 2, 3]


def test_a_run_whose_teachers_are_all_out_stops(smollm_dir: Path, toy_config: Path, tmp_path: Path) -> None:
    secret = "sk-test-QUOTEDBACK123"
    body = json.dumps({"error": {"message": f"Incorrect API key provided: {secret}"}}).encode()

    async def runs() -> tuple[tuple[int, str], tuple[int, str]]:
        async with FakeOpenAIServer(lambda request: Reply(status=401, raw_body=body)) as fake:
            spec = f"name=broken,base_url={fake.base_url},model=m,api_key_env=BROKEN_TEACHER_KEY"
            env = {**offline_env(), "BROKEN_TEACHER_KEY": secret}
            results = []
            for out, flags in ((tmp_path / "stops", ()), (tmp_path / "goes_on", ("--continue-without-teachers",))):
                proc = await asyncio.create_subprocess_exec(
                    *command(smollm_dir, toy_config, out, *flags, "--num-examples", "1", teacher=spec),
                    cwd=REPO_ROOT, env=env, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
                )  # fmt: skip
                _, err = await asyncio.wait_for(proc.communicate(), RUN_TIMEOUT_S)
                results.append((proc.returncode, err.decode()))
            return results[0], results[1]

    (stop_code, stop_err), (go_code, go_err) = asyncio.run(runs())
    assert stop_code == 1, stop_err[-3000:]
    last = stop_err.strip().splitlines()[-2]
    assert "train_vllm.py: error: every LLM teacher is out of the run (broken: HTTP 401" in last, last
    assert "--continue-without-teachers" in last and "Traceback" not in stop_err
    assert not (tmp_path / "stops" / "metrics.jsonl").exists()  # the example was not trained
    assert go_code == 0, go_err[-3000:]
    (record,) = [json.loads(line) for line in (tmp_path / "goes_on" / "metrics.jsonl").read_text().splitlines()]
    assert list(record["teachers_out"]) == ["broken"] and "HTTP 401" in record["teachers_out"]["broken"]
    assert "teachers out" in go_err
    assert secret not in stop_err + go_err + (tmp_path / "goes_on" / "metrics.jsonl").read_text()
