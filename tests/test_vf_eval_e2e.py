"""The real `vf-eval` CLI against a real OpenAI-compatible server (transformers serve + SmolLM2) on 127.0.0.1."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from alphazero_llm.config import load_config
from alphazero_llm.data import Gsm8kSource, load_gsm8k
from alphazero_llm.models.student import StudentModel, StudentSpec
from alphazero_llm.quickstart import KEY_VAR, vf_eval_command
from alphazero_llm.rewards import (
    PerplexityReward,
    answer_parsed,
    completion_text,
    format_ok,
    hre_score,
    strict_score,
)
from alphazero_llm.server import LocalServer

pytestmark = pytest.mark.slow

# Easy hand-written questions, so that the 135M model gets some right and some wrong.
MINI = Path(__file__).resolve().parent / "fixtures" / "gsm8k_mini"
HRE_WEIGHT = 0.7


def run_vf_eval(server: LocalServer, workdir: Path, env_args: dict) -> list[dict]:
    """`vf-eval alphazero-llm-trainer -m ... -b http://127.0.0.1:PORT/v1 -n 5 -r 2 -s`, from an unrelated directory."""
    cmd = vf_eval_command(server, 5, 2, 96, workdir / "out", env_args)
    env = {**os.environ, KEY_VAR: "local-no-key"}
    done = subprocess.run(cmd, cwd=workdir, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, f"vf-eval failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    (results,) = (workdir / "out").glob("evals/*/*/results.jsonl")
    return [json.loads(line) for line in results.read_text().splitlines() if line.strip()]


def test_vf_eval_end_to_end(smollm_server: LocalServer, tmp_path: Path):
    rows = run_vf_eval(
        smollm_server, tmp_path, {"dataset_path": str(MINI), "num_dev_examples": 2, "hre_weight": HRE_WEIGHT}
    )
    assert len(rows) == 10

    golds = load_gsm8k("test", Gsm8kSource(path=str(MINI)))["answer"][:5]
    assert sorted({row["answer"] for row in rows}) == sorted(golds)
    for row in rows:
        text = completion_text(row["completion"])
        assert text.strip(), f"empty completion in {row}"
        correctness = hre_score(text, row["answer"])
        assert row["correctness_reward"] == correctness
        assert row["metrics"]["correctness_reward"] == correctness
        assert row["strict_correctness"] == strict_score(text, row["answer"])
        assert row["format_ok"] == format_ok(row["completion"])
        assert row["answer_parsed"] == answer_parsed(row["completion"])
        # The reward is the weighted sum: HRE at the given weight, metrics at weight 0.
        assert row["reward"] == pytest.approx(HRE_WEIGHT * correctness)


def test_vf_eval_with_the_student_scores_pre(smollm_server: LocalServer, smollm_dir: Path, tmp_path: Path):
    """PRE through vf-eval: present, in [-1, 1], equal to the library's PRE on the saved rollouts."""
    env_args = {
        "dataset_path": str(MINI),
        "num_dev_examples": 2,
        "use_student_model": True,
        "student_model": str(smollm_dir),
    }
    rows = run_vf_eval(smollm_server, tmp_path, env_args)
    assert len(rows) == 10
    assert all(-1.0 <= row["perplexity_reward"] <= 1.0 for row in rows)
    assert len({row["perplexity_reward"] for row in rows}) > 1  # a real score, not a constant

    # Recompute with the student loaded the same way, one question's rollouts per call as vf-eval did.
    config = load_config()
    spec = StudentSpec(name=str(smollm_dir), lora=False)
    pre = PerplexityReward(StudentModel.load(spec, config.models))
    by_example: dict[int, list[dict]] = {}
    for row in rows:
        by_example.setdefault(row["example_id"], []).append(row)
    rewards = config.training.environment  # the rubric's weights
    for group in by_example.values():
        expected = pre.score(
            [row["prompt"] for row in group],
            [completion_text(row["completion"]) for row in group],
            [row["info"]["solution"] for row in group],
        )
        for row, value in zip(group, expected, strict=True):
            assert row["perplexity_reward"] == pytest.approx(value, abs=1e-4)
            weighted = rewards.hre_weight * row["correctness_reward"] + rewards.pre_weight * row["perplexity_reward"]
            assert row["reward"] == pytest.approx(weighted)
