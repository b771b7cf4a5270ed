"""The data set's worked solution as a teacher, and a proposer that asks several teachers at once.

`ReferenceTeacher` knows one thing per question: GSM8K's reference solution (`info.solution`, whose
last line is `#### N`), read without its calculator annotations (`<<8*3=24>>`, a tool's trace that
no solver writes). Asked for a "right" step, it gives the first reference line that the partial
solution does not hold yet; asked for a "wrong" one, the same line with its last number changed
(`perturb`), which is how a careless solver slips. It needs no model, no network and no key, so a
run on a machine without API access still has a teacher that reaches the gold answer; its steps
are exactly the supervision the data set provides, placed in the tree beside the student's own.

It abstains (proposes nothing) where it cannot help: when every reference line is used, when a
line holds no number to change, and on a path that already took one of its wrong steps, because
it cannot continue a solution whose numbers it knows to be wrong. The student and any LLM
teachers still expand such nodes.

`CombinedTeachers` puts several teacher proposers (e.g. the LLM ensemble and the reference)
behind one `Proposer`: all are asked concurrently; one that fails is logged and the others'
steps are kept; the call fails only when every teacher failed.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Sequence

from alphazero_llm.answers import strip_calculator_annotations
from alphazero_llm.data import Problem
from alphazero_llm.mcts.proposers import Partial, ProposedStep, Proposer
from alphazero_llm.models.prompts import normalise_step

logger = logging.getLogger(__name__)

_NUMBER = re.compile(r"\d+")


def perturb(line: str, delta: int = 1) -> str | None:
    """`line` with its last integer increased by `delta`; None when the line holds no number."""
    matches = list(_NUMBER.finditer(line))
    if not matches:
        return None
    m = matches[-1]
    return f"{line[: m.start()]}{int(m[0]) + delta}{line[m.end() :]}"


def solution_lines(solution: str) -> list[str]:
    """The reference solution's non-empty lines, without calculator annotations, whitespace-normalised
    as the search normalises steps."""
    return [normalise_step(line) for line in strip_calculator_annotations(solution).splitlines() if line.strip()]


class ReferenceTeacher:
    """Proposes the reference solution's next line ("right") or a numerically perturbed copy ("wrong")."""

    name = "reference"

    def __init__(self) -> None:
        self.proposed = 0

    def next_line(self, problem: Problem, partial_solution: str) -> str | None:
        """The first reference line not yet in `partial_solution`; None when there is none or the path is spoilt."""
        lines = solution_lines(problem.solution)
        done = {normalise_step(line) for line in partial_solution.splitlines() if line.strip()}
        if done & {perturb(line) for line in lines}:
            return None  # the path took one of our wrong steps: its numbers are off from here on
        return next((line for line in lines if line not in done), None)

    async def propose(self, problem: Problem, partial: Partial, direction: str, n: int) -> list[ProposedStep]:
        line = self.next_line(problem, partial.text)
        if n <= 0 or line is None or direction not in ("right", "wrong"):
            return []
        text = line if direction == "right" else perturb(line)
        if text is None:
            return []
        self.proposed += 1
        return [ProposedStep(text, self.name, (self.name,), source="reference")]

    def tokens_used(self) -> int:
        return 0  # no model is asked


class CombinedTeachers:
    """Several teacher proposers as one: asked concurrently, their steps concatenated in order."""

    name = "teachers"

    def __init__(self, teachers: Sequence[Proposer]) -> None:
        if not teachers:
            raise ValueError("CombinedTeachers needs at least one teacher")
        self.teachers = tuple(teachers)

    async def propose(self, problem: Problem, partial: Partial, direction: str, n: int) -> list[ProposedStep]:
        answers = await asyncio.gather(
            *(t.propose(problem, partial, direction, n) for t in self.teachers), return_exceptions=True
        )
        steps: list[ProposedStep] = []
        errors: list[BaseException] = []
        for teacher, answer in zip(self.teachers, answers, strict=True):
            if isinstance(answer, Exception):
                logger.warning("teacher %s failed (%s: %s)", teacher.name, type(answer).__name__, answer)
                errors.append(answer)
            elif isinstance(answer, BaseException):
                raise answer  # cancellation and the like are not a teacher's failure
            else:
                steps.extend(answer)
        if len(errors) == len(self.teachers):
            raise errors[0]
        return steps

    def tokens_used(self) -> int:
        return sum(t.tokens_used() for t in self.teachers)
