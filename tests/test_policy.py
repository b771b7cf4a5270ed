"""The student as the search asks it (`models.policy.StudentPolicy`): it continues its own answer, token for token."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from alphazero_llm.config import load_config
from alphazero_llm.data import Problem
from alphazero_llm.mcts import Partial
from alphazero_llm.mcts.tree import teacher_step_text
from alphazero_llm.models.policy import StudentPolicy, first_line_ids
from alphazero_llm.models.prompts import question_messages
from alphazero_llm.models.sampling import Sampling
from alphazero_llm.models.student import StudentModel, StudentSpec
from alphazero_llm.testing.fake_vllm import FakeEncoder, FakeTokenizer, fake_token_ids

SYSTEM = "Solve step by step. Format your final answer as: #### [number]"
PROBLEM = Problem("Tom has 3 apples and buys 4 more. How many apples does he have?", "7", "3 + 4 = 7\n#### 7", "t0")


def test_first_line_ids_cuts_after_the_first_line_break_that_follows_text():
    decode = FakeTokenizer().decode
    assert first_line_ids(decode, fake_token_ids("3 + 4 = 7\n#### 7")) == tuple(fake_token_ids("3 + 4 = 7\n"))
    # Leading blank lines are part of the step as sampled; the cut is after the first line with text.
    assert first_line_ids(decode, fake_token_ids("\n\nSo 7.\nMore")) == tuple(fake_token_ids("\n\nSo 7.\n"))
    assert first_line_ids(decode, fake_token_ids("no break")) == tuple(fake_token_ids("no break"))  # budget ran out
    assert first_line_ids(decode, []) == ()


@pytest.mark.slow
def test_steps_and_rollouts_continue_the_students_own_answer(smollm_dir: Path):
    """Greedy: a step is the student's own first line (ids and text verbatim, line break included) and a
    rollout its whole answer; after a partial solution the context is the prompt, then the partial's ids."""
    student = StudentModel.load(StudentSpec(name=str(smollm_dir), device="cpu", lora=False), load_config().models)
    greedy = Sampling.greedy_decoding(60)
    policy = StudentPolicy(student, step=greedy, rollout=greedy, system_prompt=SYSTEM, seed=0)
    prompt = student.prompt_ids(question_messages(PROBLEM.question, SYSTEM))
    assert list(policy.prompt_ids(PROBLEM)) == prompt
    (answer,) = student.sample_ids([prompt], greedy)[0]

    (step,) = asyncio.run(policy.propose(PROBLEM, Partial(""), "student", 1))
    assert step.token_ids == tuple(answer[: len(step.token_ids)]) and step.text.endswith("\n")
    assert step.text.strip() == next(line.strip() for line in student.tokenizer.decode(answer).splitlines() if line)
    assert asyncio.run(policy.finish(PROBLEM, [Partial("")]))[0] == student.tokenizer.decode(
        answer, skip_special_tokens=True
    )

    line = teacher_step_text("", "He starts with 3 apples.")
    partial = Partial(line, policy.encode(line))
    (after,) = asyncio.run(policy.propose(PROBLEM, partial, "student", 1))
    (continuation,) = student.sample_ids([prompt + list(partial.token_ids)], greedy)[0]
    assert after.token_ids == tuple(continuation[: len(after.token_ids)])
    assert policy.tokens_used() == len(answer) * 2 + len(continuation)  # every sampled token is counted


class RecordingSampler(FakeEncoder):
    """Samples "#### 7" for every prompt and records each `sample_ids` call."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[list[list[int]], Sampling]] = []

    def sample_ids(self, prompt_ids, sampling, *, n=1, seed=None):
        self.calls.append(([list(p) for p in prompt_ids], sampling))
        return [[fake_token_ids("#### 7")] * n for _ in prompt_ids]


def test_rollouts_of_many_leaves_are_one_batch():
    model = RecordingSampler()
    rollout = Sampling(64, 0.7, 0.95, stop_at_answer=True)
    policy = StudentPolicy(model, step=Sampling(8, 0.7, 0.95), rollout=rollout, system_prompt=SYSTEM, seed=0)
    partials = [Partial("a\n", tuple(fake_token_ids("a\n"))), Partial("b\n", tuple(fake_token_ids("b\n")))]
    assert asyncio.run(policy.finish(PROBLEM, partials)) == ["#### 7", "#### 7"]
    ((contexts, sampling),) = model.calls  # one call for both
    prompt = list(policy.prompt_ids(PROBLEM))
    assert contexts == [prompt + list(p.token_ids) for p in partials] and sampling == rollout
    assert policy.tokens_used() == 2 * len("#### 7")
