"""Greedy evaluation scored by hre_score, with a Wilson 95% interval."""

from __future__ import annotations

import pytest

from alphazero_llm.training.evaluation import evaluate_greedy, wilson_interval


def test_wilson_interval_known_values() -> None:
    # Reference values: statsmodels proportion_confint(…, method="wilson").
    low, high = wilson_interval(1, 10)
    assert low == pytest.approx(0.017875, abs=1e-5) and high == pytest.approx(0.404155, abs=1e-5)
    assert wilson_interval(0, 20)[0] == 0.0 and wilson_interval(20, 20)[1] == 1.0
    assert wilson_interval(0, 0) == (0.0, 1.0)


class Answers:
    def __init__(self, texts: list[str]) -> None:
        self.texts, self.calls = texts, []

    def generate(self, prompts, n=1, max_new_tokens=256, temperature=0.7, **kwargs):
        self.calls.append((len(prompts), temperature, max_new_tokens))
        return [[t] for t in self.texts]


def test_evaluate_greedy_scores_with_hre() -> None:
    rows = [{"question": "1+1?", "answer": "2"}, {"question": "2+2?", "answer": "4"}, {"question": "x", "answer": "9"}]
    student = Answers(["so #### 2", "The answer is 5", "no idea"])
    result = evaluate_greedy(student, rows, "Solve.", max_new_tokens=32)
    assert (result.correct, result.total) == (1, 3)
    assert student.calls == [(3, 0.0, 32)]  # one greedy batch
    assert result.low < 1 / 3 < result.high
    assert "Wilson 95%" in str(result)
    assert set(result.as_dict("eval_before")) == {"eval_before/accuracy", "eval_before/ci_low",
                                                    "eval_before/ci_high", "eval_before/n"}  # fmt: skip
