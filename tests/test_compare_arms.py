"""examples/compare_arms.py end to end at a toy size: every arm trains, on the same questions with the same budget of
optimiser steps, and the report's tests agree with its own per-question outcomes.

The figures of the real comparison are in the README; this keeps the command from rotting.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from alphazero_llm.training.checkpoint import sha256_file
from alphazero_llm.training.evaluation import mcnemar_exact

REPO_ROOT = Path(__file__).resolve().parents[1]
SCRIPT = REPO_ROOT / "examples" / "compare_arms.py"
ARMS = ("mcts", "sample", "sft")
TOY = [
    "--num-examples", "2", "--eval-every", "2", "--eval-size", "2", "--seeds", "1", "2",
    "--set", "mcts.num_iterations=2", "--set", "mcts.tokens_per_expansion=8", "--set", "mcts.rollout_tokens=8",
    "--set", "mcts.max_depth=3", "--set", "sample.group_size=2", "--set", "sample.max_new_tokens=8",
    "--set", "evaluation.max_new_tokens=8",
]  # fmt: skip


def compare(out: Path, svamp_file: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    argv = [sys.executable, str(SCRIPT), "--out", str(out), "--dataset-path", str(svamp_file), *TOY]
    proc = subprocess.run(argv, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return proc


@pytest.mark.slow
def test_the_comparison_runs_every_arm_on_equal_terms(svamp_file: Path, smollm_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "compare"
    compare(out, svamp_file)
    report = json.loads((out / "comparison-dev.json").read_text(encoding="utf-8"))
    assert (out / "comparison-dev.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert report["settings"]["dataset"] == "svamp" and report["settings"]["split"] == "dev"
    assert len(report["questions"]) == 2 and report["base"]["total"] == 2
    assert sorted(report["runs"]) == ["1", "2"]
    for seed, arms in report["runs"].items():
        assert sorted(arms) == sorted([*ARMS, "tests"])
        orders = set()
        for arm in ARMS:
            assert list(arms[arm]) == ["2"]  # the checkpoint at 2 examples (the untrained student is "base")
            final = arms[arm]["2"]
            assert final["sha256"] == sha256_file(Path(final["adapter"]) / "adapter_model.safetensors")
            assert len(final["correct_flags"]) == 2 and final["total"] == 2
            answers = out / f"seed-{seed}" / arm / "evals" / "answers_dev-step-2.jsonl"
            assert len(answers.read_text(encoding="utf-8").splitlines()) == 2  # the texts behind the number
            budget = final["budget"]
            assert budget["examples"] == 2 and budget["optimizer_steps"] == 2  # equal optimiser steps
            assert budget["grad_tokens"] > 0 and budget["time_s"] > 0
            assert (budget["student_tokens"] == 0) == (arm == "sft")
            assert budget["teacher_tokens"] == 0  # the tree's teacher here is the reference: no LLM tokens
            metrics = (out / f"seed-{seed}" / arm / "metrics.jsonl").read_text(encoding="utf-8").splitlines()
            orders.add(tuple(json.loads(line)["problem_id"] for line in metrics))
        assert len(orders) == 1  # the same training questions, in the same order
        tests = arms["tests"]
        assert sorted(tests["equal_steps"]) == ["sample vs mcts", "sft vs mcts", "sft vs sample"]
        for pair, test in tests["equal_steps"].items():
            b, a = pair.split(" vs ")
            gained, lost, p = mcnemar_exact(arms[a]["2"]["correct_flags"], arms[b]["2"]["correct_flags"])
            assert (test["gained"], test["lost"], test["p_value"]) == (gained, lost, p)
        assert "mcts vs sample" in tests["equal_student_tokens"]
        assert sorted(tests["vs_base"]) == sorted(ARMS)
    # Run again: nothing is trained or evaluated twice.
    again = compare(out, svamp_file)
    assert again.stderr.count("trained already") == 6 and "greedy evaluation" not in again.stderr
