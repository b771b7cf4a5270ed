"""Greedy evaluation scored by hre_score and the `#### N` format, Wilson intervals, the paired McNemar test."""

from __future__ import annotations

import pytest

from alphazero_llm.models.sampling import Sampling
from alphazero_llm.training.evaluation import EvalResult, evaluate_greedy, mcnemar_exact, wilson_interval


def test_wilson_interval_known_values() -> None:
    # Reference values: statsmodels proportion_confint(…, method="wilson").
    low, high = wilson_interval(1, 10)
    assert low == pytest.approx(0.017875, abs=1e-5) and high == pytest.approx(0.404155, abs=1e-5)
    assert wilson_interval(0, 20)[0] == 0.0 and wilson_interval(20, 20)[1] == 1.0
    assert wilson_interval(0, 0) == (0.0, 1.0)
    for n in range(1, 201):  # the rate itself always lies inside, even at 0 and n (no rounding error outside)
        assert wilson_interval(0, n)[0] == 0.0 and wilson_interval(n, n)[1] == 1.0


class Answers:
    def __init__(self, texts: list[str]) -> None:
        self.texts, self.calls = texts, []

    def generate(self, prompts, sampling: Sampling, *, n=1, seed=None):
        self.calls.append((len(prompts), sampling, n))
        answered, self.texts = self.texts[: len(prompts)], self.texts[len(prompts) :]
        return [[t] for t in answered]


def test_evaluate_greedy_scores_with_hre_and_format() -> None:
    rows = [{"question": "1+1?", "answer": "2"}, {"question": "2+2?", "answer": "4"}, {"question": "x", "answer": "9"}]
    student = Answers(["1 + 1 = 2\n\nso #### 2", "The answer is 4", "#### 7"])
    result = evaluate_greedy(student, rows, "Solve.", max_new_tokens=32, batch_size=2, progress=False)
    assert result.correct_flags == (True, True, False)
    assert result.format_flags == (True, False, True)
    assert (result.correct, result.formatted, result.total) == (2, 2, 3)
    assert result.answer_lines == (2, 1, 1) and result.mean_answer_lines == pytest.approx(4 / 3)
    assert result.worked_flags == (True, False, False)  # "#### 7" alone is a guess, not worked out
    assert (result.worked, result.worked_rate) == (1, pytest.approx(1 / 3))
    greedy = Sampling(max_new_tokens=32, temperature=0.0, top_p=1.0)
    assert student.calls == [(2, greedy, 1), (1, greedy, 1)]  # greedy, in batches of 2
    low, high = result.accuracy_interval
    assert low < 2 / 3 < high
    assert "Wilson 95%" in str(result) and "#### format 2/3" in str(result)
    assert set(result.as_dict("eval_before")) == {
        "eval_before/accuracy", "eval_before/ci_low", "eval_before/ci_high", "eval_before/format_rate",
        "eval_before/format_ci_low", "eval_before/format_ci_high", "eval_before/n",
    }  # fmt: skip
    assert EvalResult.from_record(result.to_record()) == result
    # A record written before answer_lines and worked_flags existed still reads back.
    old_record = {k: v for k, v in result.to_record().items() if k not in ("answer_lines", "worked_flags")}
    assert EvalResult.from_record(old_record) == EvalResult(result.correct_flags, result.format_flags)


def test_eval_result_rejects_unpaired_flags() -> None:
    with pytest.raises(ValueError, match="one entry per question"):
        EvalResult((True,), (True, False))
    with pytest.raises(ValueError, match="one entry per question, or none"):
        EvalResult((True,), (True,), (1, 2))
    with pytest.raises(ValueError, match="worked_flags must have one entry per question, or none"):
        EvalResult((True,), (True,), (), (True, False))


def test_mcnemar_exact_known_values() -> None:
    # 8 gained, 1 lost: two-sided exact binomial p = 2 * (1 + 9) / 512 = 0.0390625 (R: binom.test(1, 9)).
    before = [False] * 8 + [True] + [True] * 5 + [False] * 6
    after = [True] * 8 + [False] + [True] * 5 + [False] * 6
    gained, lost, p = mcnemar_exact(before, after)
    assert (gained, lost) == (8, 1)
    assert p == pytest.approx(0.0390625)
    assert mcnemar_exact(after, before)[2] == pytest.approx(p)  # symmetric
    assert mcnemar_exact([True, False], [True, False]) == (0, 0, 1.0)  # no discordant pair
    assert mcnemar_exact([False] * 3, [True] * 3)[2] == pytest.approx(0.25)  # 2 * 1/8
    with pytest.raises(ValueError, match="differ in length"):
        mcnemar_exact([True], [True, False])
