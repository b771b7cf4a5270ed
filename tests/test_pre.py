"""PRE: the formula, its sign, batching and caching (with a scripted model), then on the real student."""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from pathlib import Path

import pytest

from alphazero_llm.rewards import PerplexityReward, perplexity, pre_reward

QUESTION = [{"role": "user", "content": "What is 2 + 3?"}]


def test_perplexity_is_exp_of_mean_nll():
    assert perplexity([math.log(0.5)] * 4) == pytest.approx(2.0)
    assert perplexity([0.0]) == 1.0
    with pytest.raises(ValueError, match="empty"):
        perplexity([])


@pytest.mark.parametrize(
    ("completion_ppl", "reference_ppl", "expected"),
    [
        (5.0, 10.0, 0.5),  # more natural than the reference: positive
        (10.0, 10.0, 0.0),
        (15.0, 10.0, -0.5),  # less natural: negative
        (30.0, 10.0, -1.0),  # clipped
        (1.0, 1.0, 0.0),
    ],
)
def test_pre_formula_and_sign(completion_ppl: float, reference_ppl: float, expected: float):
    assert pre_reward(completion_ppl, reference_ppl) == pytest.approx(expected)


def test_pre_is_bounded():
    rng = random.Random(0)
    for _ in range(1000):
        value = pre_reward(rng.uniform(1, 1e4), rng.uniform(1, 1e4))
        assert -1.0 <= value <= 1.0


class ScriptedModel:
    """Log-prob -k per token for a text of k words' length class; records every call."""

    def __init__(self, per_token: dict[str, float]) -> None:
        self.per_token = per_token
        self.calls: list[list[str]] = []

    def completion_logprobs(self, prompts: Sequence, completions: Sequence[str]) -> list[list[float]]:
        self.calls.append(list(completions))
        return [[self.per_token[c]] * len(c.split()) for c in completions]


def test_group_is_scored_in_one_call_and_the_reference_is_cached(caplog: pytest.LogCaptureFixture):
    model = ScriptedModel({"2 + 3 = 5": math.log(0.5), "five": math.log(0.25), "It is 5": math.log(0.5)})
    pre = PerplexityReward(model)
    rewards = pre.score([QUESTION] * 3, ["five", "It is 5", ""], ["2 + 3 = 5"] * 3)
    # reference ppl 2; "five" ppl 4 -> (2 - 4) / 2 = -1; "It is 5" ppl 2 -> 0; empty -> -1
    assert rewards == [pytest.approx(-1.0), pytest.approx(0.0), -1.0]
    assert model.calls == [["2 + 3 = 5", "five", "It is 5"]]
    assert "completion 2 is empty" in caplog.text
    pre.score([QUESTION], ["It is 5"], ["2 + 3 = 5"])
    assert model.calls[-1] == ["It is 5"]  # the reference was not scored again


def test_length_mismatch_is_an_error():
    with pytest.raises(ValueError, match="same length"):
        PerplexityReward(ScriptedModel({})).score([QUESTION], ["a", "b"], ["c"])


# --- on the real student ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def student(smollm_dir: Path):
    from alphazero_llm.config import load_config
    from alphazero_llm.models.student import StudentModel, StudentSpec

    return StudentModel.load(StudentSpec(name=str(smollm_dir), device="cpu", lora=False), load_config().models)


def shuffled_steps(solution: str, rng: random.Random) -> str | None:
    """The solution with its reasoning lines in another order (the #### line stays last)."""
    *steps, final = solution.split("\n")
    if len(steps) < 2:
        return None
    order = steps[:]
    while order == steps:
        rng.shuffle(order)
    return "\n".join([*order, final])


@pytest.mark.slow
def test_reference_solution_scores_zero(student):
    pre = PerplexityReward(student)
    solution = "2 + 3 = 5\n#### 5"
    assert pre.score([QUESTION], [solution], [solution]) == [pytest.approx(0.0, abs=1e-6)]


@pytest.mark.slow
def test_gold_beats_shuffled_steps_on_real_gsm8k(student, gsm8k_dir: Path):
    """Sanity property: on >= 95% of 50 test questions the gold solution has a higher PRE than its shuffle."""
    from alphazero_llm.data import Gsm8kSource, load_gsm8k

    rows = load_gsm8k("test", Gsm8kSource(path=str(gsm8k_dir)))
    rng = random.Random(0)
    pre = PerplexityReward(student)
    wins = total = 0
    for row in rows:
        shuffled = shuffled_steps(row["info"]["solution"], rng)
        if shuffled is None:
            continue
        prompt = [{"role": "user", "content": row["question"]}]
        gold_pre, shuffled_pre = pre.score(
            [prompt, prompt], [row["info"]["solution"], shuffled], [row["info"]["solution"]] * 2
        )
        wins += gold_pre > shuffled_pre
        total += 1
        if total == 50:
            break
    assert total == 50
    assert wins / total >= 0.95, f"gold beat its shuffle on only {wins}/{total}"
