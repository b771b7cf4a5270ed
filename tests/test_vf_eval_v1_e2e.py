"""verifiers.v1's real eval CLI through our taskset, against the loopback server (transformers serve + SmolLM2):

- verifiers 0.4.0's `vf-eval`, in a second venv (`.venv-vf04`, or `$ALPHAZERO_VF04_VENV`; `.ci/run` builds it);
- verifiers 0.3.1's v1 `eval`, in this venv.

Every row's reward must equal the library's score of that row's completion. The null harness runs its chat
program in a uv script environment; uv and the wheels of each release's program come from the 0.4 venv
(`.ci/vf04_venv.sh` fetches them), and uv runs offline, so the runs reach nothing but loopback.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO_ROOT, missing

from alphazero_llm.config import load_config
from alphazero_llm.models.prompts import question_messages
from alphazero_llm.models.student import StudentModel, StudentSpec
from alphazero_llm.rewards import PerplexityReward, answer_parsed, format_ok, hre_score, strict_score
from alphazero_llm.server import LocalServer

pytestmark = pytest.mark.slow

MINI = Path(__file__).resolve().parent / "fixtures" / "gsm8k_mini"
KEY_VAR = "ALPHAZERO_LOCAL_API_KEY"
VF04_VENV = Path(os.environ.get("ALPHAZERO_VF04_VENV") or REPO_ROOT / ".venv-vf04")
VF04_SETUP = "bash .ci/vf04_venv.sh"


def vf04_bin(name: str) -> Path:
    path = VF04_VENV / "bin" / name
    if not path.is_file():
        missing(f"{path} not found: the verifiers 0.4 venv is built by .ci/run, or by hand: {VF04_SETUP}")
    return path


def run_v1_eval(cli: Path, wheels: str, server: LocalServer, workdir: Path, taskset_args: dict) -> list[dict]:
    """The offline v1 eval (null harness, subprocess runtime, loopback base URL, no push) of 3 questions x 2
    rollouts, its chat program's packages taken from `.venv-vf04/<wheels>`; returns the saved traces."""
    flags = [f for name, value in taskset_args.items() for f in (f"--env.taskset.{name}", str(value))]
    cmd = [
        str(cli), "alphazero-llm-trainer",
        "--env.agent.harness.id", "null", "--env.agent.runtime.type", "subprocess",
        "--client.base-url", server.base_url, "--client.api-key-var", KEY_VAR,
        "-m", server.model_name, "-n", "3", "-r", "2", "--sampling.max-tokens", "128",
        "--no-push", "--no-rich", "-o", str(workdir / "out"), *flags,
    ]  # fmt: skip
    venv = vf04_bin("uv").parents[1]
    if not (venv / wheels).is_dir():
        missing(f"{venv / wheels} not found: {VF04_SETUP} fetches it")
    no_index = workdir / "no-index"
    no_index.mkdir()
    offline_uv = {
        "PATH": f"{venv / 'bin'}{os.pathsep}{os.environ['PATH']}",
        # uv takes the program's packages from the wheels alone: its index is an empty folder, and it runs offline
        # (0.3.1; 0.4 sets UV_OFFLINE=false for this step, hence the index).
        "UV_DEFAULT_INDEX": no_index.as_uri(),
        "UV_OFFLINE": "1",
        "UV_FIND_LINKS": str(venv / wheels),
        "UV_CACHE_DIR": str(venv / f"uv-cache-{wheels}"),
    }
    # Any HTTP(S) request past loopback goes to a closed loopback port and fails, so the run fails if it reaches out.
    closed = {
        "HTTP_PROXY": "http://127.0.0.1:9",
        "HTTPS_PROXY": "http://127.0.0.1:9",
        "NO_PROXY": "127.0.0.1,localhost",
    }
    env = {**os.environ, **offline_uv, **closed, KEY_VAR: "local-no-key"}
    done = subprocess.run(cmd, cwd=workdir, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, f"{cli.name} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    (traces,) = (workdir / "out").glob("*/traces.jsonl")
    episodes = [json.loads(line) for line in traces.read_text().splitlines() if line.strip()]
    assert all(episode["ok"] for episode in episodes), [episode["errors"] for episode in episodes]
    return [trace for episode in episodes for trace in episode["traces"]]


def reply(trace: dict) -> str:
    (message,) = [n["message"] for n in trace["nodes"] if n.get("sampled")]
    return message["content"] or ""


def check_hre_and_metrics(traces: list[dict], hre_weight: float) -> None:
    assert len(traces) == 6
    assert len({t["task"]["data"]["answer"] for t in traces}) == 3
    for trace in traces:
        text, gold = reply(trace), trace["task"]["data"]["answer"]
        assert text.strip(), f"empty completion in {trace['id']}"
        assert trace["rewards"]["correctness_reward"] == {"score": hre_score(text, gold), "weight": hre_weight}
        assert trace["metrics"] == {
            "strict_correctness": strict_score(text, gold),
            "format_ok": format_ok(text),
            "answer_parsed": answer_parsed(text),
        }


def test_verifiers_04_vf_eval_scores_every_row_as_the_library(
    smollm_server: LocalServer, smollm_dir: Path, tmp_path: Path
):
    """0.4's vf-eval with PRE (the student scores it in the eval process) and a non-default HRE weight."""
    args = {"dataset-path": MINI, "num-dev-examples": 2, "hre-weight": 0.7, "use-student-model": "true",
            "student-model": smollm_dir}  # fmt: skip
    traces = run_v1_eval(vf04_bin("vf-eval"), "harness-wheels", smollm_server, tmp_path, args)
    assert {t["verifiers"]["version"] for t in traces} == {"0.4.0"}
    check_hre_and_metrics(traces, hre_weight=0.7)

    pre_weight = load_config().training.environment.pre_weight
    pre = PerplexityReward(StudentModel.load(StudentSpec(name=str(smollm_dir), lora=False), load_config().models))
    for trace in traces:
        data = trace["task"]["data"]
        prompt = question_messages(data["question"], data["system_prompt"])
        (expected,) = pre.score([prompt], [reply(trace)], [data["solution"]])
        score = trace["rewards"]["perplexity_reward"]
        assert score["weight"] == pre_weight
        assert score["score"] == pytest.approx(expected, abs=1e-4)
        total = sum(r["score"] * r["weight"] for r in trace["rewards"].values())
        assert total == pytest.approx(0.7 * trace["rewards"]["correctness_reward"]["score"] + pre_weight * expected)
    assert len({t["rewards"]["perplexity_reward"]["score"] for t in traces}) > 1  # a real score, not a constant


def test_verifiers_031_v1_eval_serves_the_same_taskset(smollm_server: LocalServer, tmp_path: Path):
    cli = Path(sys.executable).parent / "eval"  # 0.3.1 installs its v1 CLI as `eval`
    if not cli.is_file():
        pytest.skip(f"{cli} not found: this venv's verifiers is not 0.3.1")
    traces = run_v1_eval(
        cli, "harness-wheels-0.3.1", smollm_server, tmp_path, {"dataset-path": MINI, "num-dev-examples": 2}
    )
    assert {t["verifiers"]["version"] for t in traces} == {"0.3.1"}
    check_hre_and_metrics(traces, hre_weight=load_config().training.environment.hre_weight)
    assert all(set(t["rewards"]) == {"correctness_reward"} for t in traces)  # no PRE without a student


def test_the_taskset_unit_tests_pass_on_verifiers_04():
    """tests/test_taskset.py (rows, weights, metrics, a second taskset reusing the rewards) under 0.4."""
    python = vf04_bin("python")
    done = subprocess.run(
        [str(python), "-m", "pytest", "-q", "-p", "no:cacheprovider", str(REPO_ROOT / "tests" / "test_taskset.py")],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert " passed" in done.stdout and "skipped" not in done.stdout
