"""The reference-solution teacher and the combined teacher proposer."""

from __future__ import annotations

import asyncio
import dataclasses
import random

import pytest

from alphazero_llm.config import load_config
from alphazero_llm.data import Gsm8kSource, Problem, load_gsm8k
from alphazero_llm.mcts import ConstantStepScorer, Evaluator, Partial, ProposedStep, Proposers, search
from alphazero_llm.mcts.reference_teacher import CombinedTeachers, ReferenceTeacher, perturb, solution_lines
from alphazero_llm.mcts.tree import teacher_step_text
from alphazero_llm.models.terminal import TerminalChecker

QUESTION = "Tom has 3 apples and buys 4 more. He eats 2. How many are left?"
SOLUTION = "He has 3 + 4 = <<3+4=7>>7 apples.\nAfter eating, 7 - 2 = <<7-2=5>>5 are left.\n#### 5"
PROBLEM = Problem(question=QUESTION, gold="5", solution=SOLUTION, id="q0")


def encode(text: str) -> tuple[int, ...]:
    return tuple(text.encode())


def propose(teacher, state: str, direction: str, n: int = 3, problem: Problem = PROBLEM) -> list[str]:
    return [s.text for s in asyncio.run(teacher.propose(problem, Partial(state, encode(state)), direction, n))]


def test_perturb_changes_the_last_number_only():
    assert perturb("#### 5") == "#### 6"
    assert perturb("3 + 4 = <<3+4=7>>7 apples", 2) == "3 + 4 = <<3+4=7>>9 apples"
    assert perturb("no numbers here") is None


def test_solution_lines_drop_the_calculator_annotations():
    assert solution_lines(SOLUTION) == ["He has 3 + 4 = 7 apples.", "After eating, 7 - 2 = 5 are left.", "#### 5"]


def test_right_steps_walk_the_reference_solution():
    teacher = ReferenceTeacher()
    lines = solution_lines(SOLUTION)
    state = ""
    for line in lines:
        assert propose(teacher, state, "right") == [line]  # one step, however many were asked for
        (step,) = asyncio.run(teacher.propose(PROBLEM, Partial(state), "right", 2))
        assert (step.producer, step.producers, step.source, step.token_ids) == (
            "reference",
            ("reference",),
            "reference",
            None,  # a line of text: the search tokenises it
        )
        state += teacher_step_text(state, line)  # as the search enters it
    assert state == "".join(f"{line}\n" for line in lines)
    assert propose(teacher, state, "right") == []  # the solution is complete
    assert teacher.next_line(PROBLEM, state) is None
    assert teacher.tokens_used() == 0


def test_wrong_steps_change_a_number_and_spoil_the_path():
    teacher = ReferenceTeacher()
    (wrong,) = propose(teacher, "", "wrong")
    assert wrong == "He has 3 + 4 = 8 apples."
    # After its own wrong step the teacher cannot continue: it abstains in both directions.
    state = teacher_step_text("", wrong)
    assert propose(teacher, state, "right") == [] and propose(teacher, state, "wrong") == []
    assert teacher.next_line(PROBLEM, state) is None


def test_it_continues_after_a_student_step_and_skips_lines_already_written():
    teacher = ReferenceTeacher()
    lines = solution_lines(SOLUTION)
    assert propose(teacher, "Let me think.\n", "right") == [lines[0]]
    assert propose(teacher, f"Let me think.\n{lines[0]}\n", "right") == [lines[1]]
    # A line already written is recognised however its whitespace runs.
    assert propose(teacher, f"Let me think.\n  {lines[0].replace(' ', '  ')}\n", "right") == [lines[1]]
    assert propose(teacher, "", "student") == [] and propose(teacher, "", "right", n=0) == []
    # The teacher reads each problem's own reference solution: nothing is looked up by question text.
    other = Problem(question=QUESTION, gold="12", solution="She has 5 * 2 = <<5*2=10>>10 pens.\n#### 12", id="q1")
    assert propose(teacher, "", "right", problem=other) == ["She has 5 * 2 = 10 pens."]
    assert propose(teacher, "", "right") == [lines[0]]


class Scripted:
    def __init__(self, name: str, steps: list[str] | Exception) -> None:
        self.name, self.steps = name, steps

    async def propose(self, problem, partial, direction, n):
        if isinstance(self.steps, Exception):
            raise self.steps
        return [ProposedStep(s, self.name, (self.name,)) for s in self.steps[:n]]

    def tokens_used(self) -> int:
        return 7


def test_combined_teachers_concatenate_and_survive_one_failure(caplog: pytest.LogCaptureFixture):
    ok = Scripted("llm", ["a", "b"])
    combined = CombinedTeachers([ok, ReferenceTeacher()])
    assert propose(combined, "", "right", 2) == ["a", "b", solution_lines(SOLUTION)[0]]
    assert combined.tokens_used() == 7
    half_broken = CombinedTeachers([Scripted("llm", RuntimeError("down")), ok])
    assert propose(half_broken, "", "right", 1) == ["a"]
    assert "teacher llm failed (RuntimeError: down)" in caplog.text
    all_broken = CombinedTeachers([Scripted("x", RuntimeError("down")), Scripted("y", ValueError("bad"))])
    with pytest.raises(RuntimeError, match="down"):
        asyncio.run(all_broken.propose(PROBLEM, Partial(""), "right", 1))
    with pytest.raises(ValueError, match="at least one"):
        CombinedTeachers([])


class ReferenceRollout:
    """Finishes a path with the reference's remaining lines (nothing on a path it abstains on)."""

    async def finish(self, problem: Problem, partials: list[Partial]) -> list[str]:
        return [self._finish(problem, partial) for partial in partials]

    @staticmethod
    def _finish(problem: Problem, partial: Partial) -> str:
        teacher, text = ReferenceTeacher(), partial.text
        while (line := teacher.next_line(problem, text)) is not None:
            text += f"{line}\n"
        return text[len(partial.text) :]


def test_search_with_the_reference_teacher_reaches_the_gold_answer(gsm8k_dir):
    """On 20 real GSM8K train questions, the reference teacher alone leads the search to the gold answer (the
    shipped rewards: HRE, with unfinished leaves valued by a rollout, here the reference's own)."""
    problems = [Problem.from_row(r) for r in load_gsm8k("train", Gsm8kSource(path=str(gsm8k_dir)), num_examples=20)]
    teacher = ReferenceTeacher()
    full = load_config()
    config = full.training
    rules_only = TerminalChecker.rules_only(full.teachers.terminal_checker)
    mcts = dataclasses.replace(config.mcts, num_iterations=60, num_right=1, num_wrong=1, num_student=0)
    evaluator = Evaluator(rules_only, ConstantStepScorer(0.0), config.rewards, ReferenceRollout())

    async def correct() -> int:
        found = 0
        for i, problem in enumerate(problems):
            result = await search(problem, Proposers(teacher, encode=encode), evaluator, mcts, random.Random(i))
            found += result.best_correct
            # A terminal trajectory ends on the reference's `#### N` line (correct) or its perturbed copy (wrong).
            final = solution_lines(problem.solution)[-1]
            for traj in result.trajectories:
                if traj.terminal:
                    last = traj.text.splitlines()[-1]
                    assert (last, traj.hre) in ((final, 1.0), (perturb(final), 0.0))
                    assert traj.steps[-1].source == "reference" and traj.steps[-1].text == f"{last}\n"
        return found

    # Measured 18 of 20: on two long solutions (9 lines) the 60 simulations run thin at depth 7-8, where the
    # most visited child is a once-visited wrong leaf (HRE 0), so the best path ends there.
    assert asyncio.run(correct()) >= 18
