"""examples/learn_gsm8k_cpu.py end to end at a toy size: it trains, evaluates every checkpoint and reports.

The figures of the real runs (18-36 examples, 100 held-out questions) are in the README; this
only keeps the script from rotting: the run, the per-checkpoint evaluations, the paired test and
the curve must all come out, consistent with one another.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from alphazero_llm.training.evaluation import EvalResult, mcnemar_exact

REPO_ROOT = Path(__file__).resolve().parents[1]
SCRIPT = REPO_ROOT / "examples" / "learn_gsm8k_cpu.py"


@pytest.mark.slow
def test_the_experiment_runs_and_reports(gsm8k_dir: Path, smollm_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    argv = [
        sys.executable, str(SCRIPT), "--out", str(out), "--dataset-path", str(gsm8k_dir), "--num-examples", "2",
        "--eval-every", "1", "--eval-size", "2", "--iterations", "2", "--tokens-per-step", "8", "--max-new-tokens", "8", "--rollout-tokens", "8",
    ]  # fmt: skip
    proc = subprocess.run(argv, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    summary = json.loads((out / "learning.json").read_text(encoding="utf-8"))
    assert sorted(summary["evaluations"], key=int) == ["0", "1", "2"]  # before, the checkpoint at 1, after
    results = {int(k): EvalResult.from_record(v) for k, v in summary["evaluations"].items()}
    assert all(r.total == 2 for r in results.values())
    gained, lost, p = mcnemar_exact(results[0].format_flags, results[2].format_flags)
    assert summary["mcnemar"]["format"] == {"gained": gained, "lost": lost, "p_value": p}
    assert summary["search"]["num_iterations"] == 2 and summary["search"]["num_right"] == 1
    assert summary["rewards"]["hre_weight"] == 1.0 and summary["rewards"]["length_penalty"] == 0.0
    assert all(len(r.answer_lines) == 2 for r in results.values())  # lines per answer are recorded
    assert (out / "learning_curve.png").stat().st_size > 0
    assert [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()] == [1, 2]
    assert "McNemar exact, format" in proc.stdout
    assert all(len(r.worked_flags) == 2 for r in results.values()) and "McNemar exact, worked" in proc.stdout
    assert summary["grpo"]["loss_type"] == "dr_grpo"

    # --resume goes on to 3 examples. The evaluations at 1 and 2 (the first run's "after") are reused.
    resumed = subprocess.run(
        [*argv, "--resume", "--num-examples", "3"], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=600
    )
    assert resumed.returncode == 0, resumed.stderr[-4000:]
    assert "resumed from" in resumed.stderr and "held-out eval at example" not in resumed.stderr
    again = json.loads((out / "learning.json").read_text(encoding="utf-8"))
    assert sorted(again["evaluations"], key=int) == ["0", "1", "2", "3"]
    assert all(again["evaluations"][k] == summary["evaluations"][k] for k in ("0", "1", "2"))
    assert sorted(again["adapter_sha256"], key=int) == ["1", "2", "3"]

    # An evaluation of other adapter weights (a fresh run since) is never reused.
    again["adapter_sha256"]["1"] = "0" * 64
    (out / "learning.json").write_text(json.dumps(again), encoding="utf-8")
    analysed = subprocess.run(
        [*argv, "--num-examples", "3", "--analyse-only"], cwd=REPO_ROOT, env=env, capture_output=True, text=True,
        timeout=600,
    )  # fmt: skip
    assert analysed.returncode == 0, analysed.stderr[-4000:]
    assert "held-out eval at example 1" in analysed.stderr and "held-out eval at example 2" not in analysed.stderr
    assert [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()] == [1, 2, 3]
