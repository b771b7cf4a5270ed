"""Greedy evaluation scored by hre_score and the `#### N` format, Wilson intervals, the paired McNemar test."""

from __future__ import annotations

import json

import pytest

from alphazero_llm.models.sampling import Sampling, answer_line_end, cut_after_answer
from alphazero_llm.rewards import hre_score
from alphazero_llm.testing.fake_vllm import FakeEncoder, FakeTokenizer, fake_token_ids
from alphazero_llm.training.evaluation import (
    EvalResult,
    evaluate_greedy,
    mcnemar_exact,
    wilson_interval,
    write_answers,
)


def test_wilson_interval_known_values() -> None:
    # Reference values: statsmodels proportion_confint(…, method="wilson").
    low, high = wilson_interval(1, 10)
    assert low == pytest.approx(0.017875, abs=1e-5) and high == pytest.approx(0.404155, abs=1e-5)
    assert wilson_interval(0, 20)[0] == 0.0 and wilson_interval(20, 20)[1] == 1.0
    assert wilson_interval(0, 0) == (0.0, 1.0)
    for n in range(1, 201):  # the rate itself always lies inside, even at 0 and n (no rounding error outside)
        assert wilson_interval(0, n)[0] == 0.0 and wilson_interval(n, n)[1] == 1.0


class Answers(FakeEncoder):
    """Scripted answers as token ids (one per character, `FakeTokenizer`), the way a sampler returns them."""

    def __init__(self, texts: list[str]) -> None:
        super().__init__()
        self.texts, self.calls = texts, []

    def sample_ids(self, prompt_ids, sampling: Sampling, *, n=1, seed=None):
        self.calls.append((len(prompt_ids), sampling, n))
        answered, self.texts = self.texts[: len(prompt_ids)], self.texts[len(prompt_ids) :]
        return [[fake_token_ids(t)] for t in answered]


ROWS = [
    {"question": "1+1?", "answer": "2", "info": {"solution": "1 + 1 = 2\n#### 2", "id": "test-0"}},
    {"question": "2+2?", "answer": "4", "info": {"solution": "2 + 2 = 4\n#### 4", "id": "test-1"}},
    {"question": "x", "answer": "9", "info": {"solution": "#### 9", "id": "test-2"}},
]


def test_evaluate_greedy_scores_with_hre_and_format() -> None:
    rows = ROWS
    cut_off = "Let me think about 2 + 2 and"  # as long as the budget: cut off before any answer
    student = Answers(["1 + 1 = 2\n\nso #### 2", cut_off, "#### 7"])
    result = evaluate_greedy(student, rows, "Solve.", max_new_tokens=len(cut_off), batch_size=2, progress=False)
    assert result.correct_flags == (True, False, False)
    assert result.format_flags == (True, False, True)
    assert (result.correct, result.formatted, result.total) == (1, 2, 3)
    assert result.answer_lines == (2, 1, 1) and result.mean_answer_lines == pytest.approx(4 / 3)
    assert result.worked_flags == (True, False, False)  # "#### 7" alone is a guess, not worked out
    assert (result.worked, result.worked_rate) == (1, pytest.approx(1 / 3))
    assert result.truncated_flags == (False, True, False) and result.truncation_rate == pytest.approx(1 / 3)
    assert result.answer_tokens == (len("1 + 1 = 2\n\nso #### 2"), len(cut_off), len("#### 7"))
    greedy = Sampling(max_new_tokens=len(cut_off), temperature=0.0, top_p=1.0, stop_at_answer=True)
    assert student.calls == [(2, greedy, 1), (1, greedy, 1)]  # greedy, stopping at the answer, in batches of 2
    low, high = result.accuracy_interval
    assert low < 1 / 3 < high
    assert "Wilson 95%" in str(result) and "#### format 2/3" in str(result) and "truncated 1/3" in str(result)
    assert set(result.as_dict("eval_before")) == {
        "eval_before/accuracy", "eval_before/ci_low", "eval_before/ci_high", "eval_before/format_rate",
        "eval_before/format_ci_low", "eval_before/format_ci_high", "eval_before/n",
    }  # fmt: skip
    assert EvalResult.from_record(result.to_record()) == result
    # A record written before the per-answer lists existed still reads back.
    newer = ("answer_lines", "worked_flags", "truncated_flags", "answer_tokens", "env_rewards")
    old_record = {k: v for k, v in result.to_record().items() if k not in newer}
    assert EvalResult.from_record(old_record) == EvalResult(result.correct_flags, result.format_flags)


def test_the_environment_reward_and_the_answers_file(tmp_path) -> None:
    """The rubric's weighted HRE + PRE per answer, and a JSONL from which every figure can be recomputed."""
    student = Answers(["1 + 1 = 2\n#### 2\n", "#### 4\n", "#### 8\n"])
    seen = []

    def pre(chats, texts, solutions):
        seen.append((chats, texts, solutions))
        return [0.5, -1.0, 0.0]

    result = evaluate_greedy(student, ROWS, "Solve.", 64, pre=pre, rubric_weights=(0.4, 0.6), progress=False)
    assert result.env_rewards == pytest.approx((0.4 + 0.3, 0.4 - 0.6, 0.0))
    assert result.env_reward_mean == pytest.approx(0.5 / 3)
    (chats, texts, solutions) = seen[0]
    assert chats[0] == [{"role": "system", "content": "Solve."}, {"role": "user", "content": "1+1?"}]
    assert list(texts) == list(result.texts) and list(solutions) == [r["info"]["solution"] for r in ROWS]
    write_answers(tmp_path / "answers.jsonl", ROWS, result)
    lines = [json.loads(line) for line in (tmp_path / "answers.jsonl").read_text().splitlines()]
    assert [line["id"] for line in lines] == ["test-0", "test-1", "test-2"]
    assert [hre_score(line["answer"], line["gold"]) for line in lines] == [1.0, 1.0, 0.0]  # re-scored from the file
    assert [line["correct"] for line in lines] == list(result.correct_flags)
    assert [line["env_reward"] for line in lines] == pytest.approx(list(result.env_rewards))


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


def test_generation_stops_at_the_end_of_the_first_answer_line() -> None:
    assert answer_line_end("work\n#### 18\nQuestion 2: ...") == len("work\n#### 18\n")
    assert answer_line_end("#### 18") is None  # the line is not over yet (an EOS would end it)
    assert answer_line_end("#### the answer\n") is None  # no number: not an answer line
    ids = fake_token_ids("3 + 4 = 7\n#### 7\nQuestion: and now?\n#### 9\n")
    assert cut_after_answer(ids, FakeTokenizer().decode) == fake_token_ids("3 + 4 = 7\n#### 7\n")
    assert cut_after_answer(fake_token_ids("no answer"), FakeTokenizer().decode) == fake_token_ids("no answer")
