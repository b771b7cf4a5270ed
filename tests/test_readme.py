"""README.md's runnable blocks, run with bash as written, in a scratch copy of the checkout.

A block is marked by `<!-- readme-test: NAME -->` on the line before its ```bash fence. The test runs it with
`bash -e` (a failing command fails the block) from a scratch directory of symlinks to the checkout's top-level
entries, `.venv` included, beside a symlink `shared` to the real `../shared`, so that `.venv/bin/...` and
`../shared/data/gsm8k` resolve as in the README while `checkpoints/` and `outputs/` land in the scratch copy.
What the test changes in a block, and nothing else:

- size flags: the values in `TOY_VALUES` (each flag must appear in its block exactly once) and the flags in
  `TOY_TRAIN_FLAGS` appended to each `train_vllm.py` command, with `--config` naming conftest's `toy_config`
  (a smaller CPU search, an fp32 student: seconds per example instead of minutes);
- the Setup block's install steps and its test run, which cannot run here (see `setup_script`).

The environment is the caller's without API keys (so training takes the local-teacher path) and offline, with
`GSM8K_PATH=../shared/data/gsm8k`, as the README tells a machine without internet to set it.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import signal
import subprocess
from pathlib import Path

import pytest
from conftest import missing

from alphazero_llm.rewards import completion_text
from alphazero_llm.server import detached_pid, port_in_use

pytestmark = pytest.mark.slow

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED = REPO_ROOT.parent / "shared"
BLOCK = re.compile(r"^<!-- readme-test: ([\w-]+) -->\n```bash\n(.*?)^```$", re.MULTILINE | re.DOTALL)
OUTPUTS = ("checkpoints", "outputs")  # written by the blocks: never linked into the scratch copy
PORT = 8000  # the local-eval block's server
BLOCK_TIMEOUT_S = 600

# Flag -> toy value, replacing the value the README gives; the flag must appear in the block exactly once.
TOY_VALUES = {
    "setup": {},
    "local-eval": {"-n": "2", "-r": "1", "-t": "64"},
    "cpu-quickstart": {"--num-examples": "1"},
}
# Appended to each train_vllm.py command: one example, a one-question evaluation before and after, no rollouts.
TOY_TRAIN_FLAGS = {
    "setup": "--num-examples 1 --eval-size 1 --dev-size 2 --no-rollout",
    "local-eval": "",
    "cpu-quickstart": "--eval-size 1 --dev-size 2 --no-rollout",
}


def readme_blocks() -> dict[str, str]:
    blocks: dict[str, str] = {}
    for name, body in BLOCK.findall((REPO_ROOT / "README.md").read_text(encoding="utf-8")):
        assert name not in blocks, f"two README blocks are marked readme-test: {name}"
        blocks[name] = body
    assert set(blocks) == set(TOY_VALUES), f"README's readme-test blocks: {sorted(blocks)}"
    return blocks


def canonical_install(step: str) -> tuple[str, ...] | None:
    """An install step as `pip install ARGS` (or the venv's creation), None for anything else.

    The README's `.venv/bin/pip install -e` and .ci/run's `python -m pip install --quiet` (in the activated
    venv) install the same things; CI installs non-editable on purpose, to test the built wheel.
    """
    words = shlex.split(step, comments=True)
    if words[:3] == ["python3", "-m", "venv"]:
        return tuple(words)
    for pip in (["python", "-m", "pip", "install"], [".venv/bin/pip", "install"]):
        if words[: len(pip)] == pip:
            return ("pip", "install", *(word for word in words[len(pip) :] if word not in ("-e", "--quiet")))
    return None


def ci_steps() -> tuple[list[tuple[str, ...]], list[str]]:
    """.ci/run's install steps (less its upgrade of pip itself) and its other lines."""
    lines = [line.strip() for line in (REPO_ROOT / ".ci" / "run").read_text(encoding="utf-8").splitlines()]
    installs = [step for line in lines if (step := canonical_install(line))]
    return [step for step in installs if step != ("pip", "install", "--upgrade", "pip")], lines


def setup_script(block: str) -> str:
    """The Setup block less the steps that cannot run in a test, each checked against what .ci/run does.

    - The install steps (`python3 -m venv`, `pip install ...`) need a package index, and tests reach only
      loopback: the blocks run in the existing venv, and the steps must be the ones .ci/run performs.
    - `.venv/bin/pytest` is the test suite this test belongs to: it is .ci/run's test command.
    """
    installs, ci_lines = ci_steps()
    skipped_installs, kept = [], []
    for line in block.splitlines():
        steps = []
        for step in line.split(" && "):
            if (install := canonical_install(step)) is not None:
                skipped_installs.append(install)
            elif step.strip() == ".venv/bin/pytest":
                assert ".venv/bin/pytest" in ci_lines, ".ci/run no longer runs .venv/bin/pytest"
            else:
                steps.append(step)
        if steps:
            kept.append(" && ".join(steps))
    assert skipped_installs == installs, f"README's install steps {skipped_installs} != .ci/run's {installs}"
    return "\n".join(kept)


def toy_script(name: str, script: str, config: Path | None = None) -> str:
    for flag, value in TOY_VALUES[name].items():
        script, count = re.subn(rf"(?<= ){re.escape(flag)} \S+", f"{flag} {value}", script)
        assert count == 1, f"README block {name}: {flag} appears {count} times, expected once"
    if flags := TOY_TRAIN_FLAGS[name]:
        if config is not None:
            flags += f" --config {config}"
        lines = script.splitlines()
        train = [i for i, line in enumerate(lines) if "train_vllm.py" in line and not line.lstrip().startswith("#")]
        assert train, f"README block {name}: no train_vllm.py command"
        for i in train:
            assert not lines[i].endswith("\\"), f"README block {name}: a continued train_vllm.py line"
            lines[i] += f" {flags}"
        script = "\n".join(lines)
    return script


@pytest.fixture
def scratch(tmp_path: Path, smollm_dir: Path) -> Path:
    """tmp/repo: links to the checkout's top-level entries but the outputs; tmp/shared: the real ../shared."""
    if not (REPO_ROOT / ".venv" / "bin" / "python").is_file():
        missing(f"{REPO_ROOT / '.venv'}: the README's venv is not there")
    if not (SHARED / "data" / "gsm8k" / "test.jsonl").is_file():
        missing(f"{SHARED / 'data' / 'gsm8k'}: the GSM8K files the README points at are not there")
    repo = tmp_path / "repo"
    repo.mkdir()
    for entry in REPO_ROOT.iterdir():
        if entry.name not in OUTPUTS:
            (repo / entry.name).symlink_to(entry)
    (tmp_path / "shared").symlink_to(SHARED)
    return repo


def run_block(name: str, script: str, repo: Path) -> str:
    """Run `script` with `bash -e` in `repo`; its output. Whatever it started in its session is killed after."""
    env = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY")}
    env |= {"GSM8K_PATH": "../shared/data/gsm8k", "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    proc = subprocess.Popen(["bash", "-e", "-c", script], cwd=repo, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)  # fmt: skip
    try:
        output, _ = proc.communicate(timeout=BLOCK_TIMEOUT_S)
    finally:
        with contextlib.suppress(ProcessLookupError):  # nothing left in its process group
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    (repo.parent / f"{name}.log").write_text(output, encoding="utf-8")
    assert proc.returncode == 0, f"README block {name} failed ({proc.returncode}):\n{script}\n{output[-4000:]}"
    return output


# What a training run writes: one metrics line per example with these keys, checkpoints, plots, evaluations.
REQUIRED_KEYS = {
    "step", "problem_id", "reward_mean", "hre_mean", "pre_mean", "loss", "kl", "grad_norm", "tree_nodes",
    "teacher_calls", "student_tokens", "teacher_tokens", "cost_usd", "time_s", "teachers_out",
}  # fmt: skip


def assert_trained(repo: Path, output: str) -> None:
    out = repo / "checkpoints"
    assert out.is_dir() and not out.is_symlink()
    (record,) = [json.loads(line) for line in (out / "metrics.jsonl").read_text(encoding="utf-8").splitlines()]
    assert set(record) >= REQUIRED_KEYS, REQUIRED_KEYS - set(record)
    assert record["step"] == 1 and record["tree_nodes"] > 1 and record["teacher_calls"] > 0
    assert record["teachers_out"] == {}
    assert (out / "checkpoint-1" / "meta.json").is_file() and (out / "checkpoint-1" / "adapter").is_dir()
    for stem in ("reward", "accuracy", "loss"):
        assert (out / "plots" / f"{stem}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (out / "trees" / "example-000001.html").is_file()
    evals = json.loads((out / "eval.json").read_text(encoding="utf-8"))
    assert evals["before"]["total"] == 1 and evals["after"]["total"] == 1
    assert 0.0 <= evals["after"]["low"] <= evals["after"]["high"] <= 1.0
    assert "the student's base model served at http://127.0.0.1:" in output  # no key: the local teacher
    assert "summary:" in output and "Traceback" not in output
    assert "kernels-community" not in output  # no bitsandbytes warning on a CPU


def test_setup_block_runs(scratch: Path, toy_config: Path) -> None:
    script = toy_script("setup", setup_script(readme_blocks()["setup"]), toy_config)
    assert_trained(scratch, run_block("setup", script, scratch))


def test_cpu_quickstart_block_runs(scratch: Path, toy_config: Path) -> None:
    script = toy_script("cpu-quickstart", readme_blocks()["cpu-quickstart"], toy_config)
    assert_trained(scratch, run_block("cpu-quickstart", script, scratch))


def test_local_eval_block_runs(scratch: Path, smollm_dir: Path) -> None:
    script = toy_script("local-eval", readme_blocks()["local-eval"])
    if port_in_use(PORT):
        pytest.fail(f"127.0.0.1:{PORT} is in use, and the README's local-eval block serves on it")
    try:
        run_block("local-eval", script, scratch)
    finally:  # the server --detach started is in a session of its own; the block stops it unless it failed
        if (pid := detached_pid(PORT)) is not None:
            os.killpg(pid, signal.SIGKILL)
    assert not port_in_use(PORT), "the block's --stop left the server running"

    (results,) = (scratch / "outputs").glob("evals/alphazero-llm-trainer--*/*/results.jsonl")
    metadata = json.loads((results.parent / "metadata.json").read_text(encoding="utf-8"))
    assert metadata["model"] == str(smollm_dir)  # the id the server expects, never ""
    rows = [json.loads(line) for line in results.read_text(encoding="utf-8").splitlines() if line.strip()]
    assert len(rows) == 2  # -n 2 -r 1
    for row in rows:  # a rejected request (the old empty -m) is saved as an error with an empty completion
        assert row.get("error") is None, row.get("error")
        assert completion_text(row["completion"]).strip(), row
