"""Does the search find the right answer? An oracle on 100 real GSM8K test questions.

The "right" proposer is an oracle: the next line of the gold solution (GSM8K's `info.solution`,
ending with its `#### N` line). The "wrong" proposer gives the same line with a number changed.
Once a path has taken a wrong step, its "right" continuations carry the error on (the gold line
with another number changed), so a path that left the gold solution never ends correct. PRE is
a constant 0 stand-in (no model). The rewards are config/training.yaml's: HRE decides, and an
unfinished leaf is valued by a rollout, here the oracle's own continuation of the path (right
steps to the end: the gold answer on the gold path, a wrong one off it), as the student's rollout
does in a run. A second arm has no rollout and the seed's shaping instead (direction bonus 0.1,
length penalty 0.01), which pays the teacher's label. Measured (best path correct, 10 / 30 / 60
iterations): rollouts 68% / 91% / 99%; seed's shaping 45% / 91% / 96%. The best path counts as
correct only when the evaluator graded it correct (`SearchResult.best_correct`): a path that stops
short of its `#### N` line is not, even when its last number is the gold one.

    pytest -q -s tests/test_mcts_quality.py   # prints the table for 10, 30 and 60 iterations
"""

from __future__ import annotations

import asyncio
import dataclasses
import random

import pytest

from alphazero_llm.config import load_config
from alphazero_llm.data import Gsm8kSource, Problem, load_gsm8k
from alphazero_llm.mcts import ConstantStepScorer, Evaluator, Partial, ProposedStep, Proposers, search
from alphazero_llm.mcts.reference_teacher import perturb
from alphazero_llm.models.prompts import normalise_step
from alphazero_llm.models.terminal import has_final_answer

NUM_QUESTIONS = 100


class Oracle:
    name = "oracle"

    def __init__(self, solution: str) -> None:
        # Normalised as the search stores a teacher's line, so that the path compares equal to them.
        self.lines = [normalise_step(line) for line in solution.splitlines() if line.strip()]

    async def propose(self, problem: Problem, partial: Partial, direction: str, n: int) -> list[ProposedStep]:
        done = partial.text.splitlines()  # one line per step, each ending in a line break
        if len(done) >= len(self.lines):
            return []
        line = self.lines[len(done)]
        on_gold_path = done == self.lines[: len(done)]
        # A wrong step changes a number; a "right" step off the gold path carries the error on.
        text = perturb(line, 1) if direction == "wrong" else line if on_gold_path else perturb(line, 2) or line
        return [] if text is None else [ProposedStep(text, self.name, (self.name,))]

    def tokens_used(self) -> int:
        return 0


class OracleRollout:
    """Finishes a path with the oracle's right steps: the gold answer from the gold path, a wrong one off it."""

    async def finish(self, problem: Problem, partials: list[Partial]) -> list[str]:
        return [await self._finish(problem, partial) for partial in partials]

    async def _finish(self, problem: Problem, partial: Partial) -> str:
        oracle, text = Oracle(problem.solution), partial.text
        while steps := await oracle.propose(problem, Partial(text), "right", 1):
            text += f"{steps[0].text}\n"
        return text[len(partial.text) :]


class RuleTerminal:
    async def is_terminal(self, question: str, solution: str) -> bool:
        return has_final_answer(solution)


def accuracy(rows, iterations: int, rewards, rollout: bool) -> float:
    config = dataclasses.replace(
        load_config().training.mcts, num_iterations=iterations, num_right=1, num_wrong=1, num_student=0
    )
    evaluator = Evaluator(RuleTerminal(), ConstantStepScorer(0.0), rewards, OracleRollout() if rollout else None)

    async def all_questions() -> int:
        correct = 0
        for i, row in enumerate(rows):
            problem = Problem.from_row(row)
            # No student tokenizer here: a step's UTF-8 bytes serve as its token ids.
            proposers = Proposers(Oracle(problem.solution), encode=lambda text: tuple(text.encode()))
            result = await search(problem, proposers, evaluator, config, random.Random(i))
            correct += result.best_correct
        return correct

    return asyncio.run(all_questions()) / len(rows)


@pytest.fixture(scope="module")
def rows(gsm8k_dir):
    return list(load_gsm8k("test", Gsm8kSource(path=str(gsm8k_dir)), num_examples=NUM_QUESTIONS))


def test_oracle_search_finds_the_gold_answer(rows):
    rewards = load_config().training.rewards
    shaped = dataclasses.replace(rewards, direction_bonus=0.1, length_penalty=0.01)
    table = {n: (accuracy(rows, n, rewards, True), accuracy(rows, n, shaped, False)) for n in (10, 30, 60)}
    print(f"\nbest path correct on {len(rows)} GSM8K test questions (oracle right steps, perturbed wrong steps)")
    print("iterations  rollouts (config)  seed's shaping, no rollout")
    for n, (rollouts, shaping) in table.items():
        print(f"{n:>10}  {rollouts:>17.0%}  {shaping:>26.0%}")
    assert table[60][0] >= 0.95
