"""The evaluator: the search's one source of values (mctx's `recurrent_fn`, alpha-zero-general's value).

The search asks it two things and grades nothing itself:

- `assess(problem, parent, children)`, when an expansion creates children: is each child's solution
  finished (the `TerminalCheck`), and the PRE of its step (the `StepScorer`).
- `evaluate(problem, leaf)`: the leaf's `LeafEvaluation`, whose `value` is backed up. Every leaf is
  valued by this one method, whether a simulation selected it or it was created and never visited.

For a leaf at depth d whose path from the root holds the steps s_1..s_d:

    V(leaf) = hre_weight * H  +  pre_weight * P  -  length_penalty * d  +  direction_bonus * (R - W)
              +  format_bonus * F

- H (HRE, `rewards.hre_score`): on a terminal leaf (the solution states its final answer),
  hre_score(solution, gold), 0 or 1. On a non-terminal leaf it is 0 (ungraded, `hre` None), unless
  the evaluator has a `Rollout`: then the student finishes the solution and
  H = hre_score(solution + continuation, gold). The leaves valued together at the end of a search
  are rolled out in one batch (`evaluate_many`).
- P (PRE along the path): each step's PRE p_i in [-1, 1] is scored once, when its node is
  created, given the question and the earlier steps. The path's PRE is their discounted mean from
  the root, P = sum_i g^(i-1) p_i / sum_i g^(i-1) with g = pre_discount, so that P stays in
  [-1, 1] like the rubric's PRE and the early steps, on which every later step builds, weigh the
  most. P = 0 at the root. `LeafEvaluation.pre` is this P: what the logs call PRE is what V used.
- d: the number of steps; R and W: how many of them a teacher proposed as "right" and as
  "wrong" (the student's own steps count in neither).
- F: 1 when the leaf is terminal and states its answer as `#### N`, the format the system prompt
  asks for, with N on the last numbered line of its work (`answers.worked_answer`); else 0.
  A bare "#### N" earns no F: paid for it, a small student learns to guess.

Every weight comes from `RewardsConfig` (config/training.yaml: rewards); nothing is hard-coded.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from alphazero_llm.answers import extract_answer
from alphazero_llm.config import RewardsConfig
from alphazero_llm.mcts.proposers import Partial
from alphazero_llm.rewards import hre_score
from alphazero_llm.worked import worked_answer

if TYPE_CHECKING:
    from alphazero_llm.data import Problem
    from alphazero_llm.mcts.tree import Node


class StepScorer(Protocol):
    """PRE of candidate next steps (as token ids), each in [-1, 1], given the problem and the solution so far."""

    async def score(self, problem: Problem, partial: Partial, steps: Sequence[Sequence[int]]) -> list[float]: ...


class TerminalCheck(Protocol):
    """`models.terminal.TerminalChecker` fits this protocol as it is."""

    async def is_terminal(self, question: str, solution: str) -> bool: ...


class Rollout(Protocol):
    """Finishes partial solutions, all in one call (a batch for the model); returns only the continuations."""

    async def finish(self, problem: Problem, partials: Sequence[Partial]) -> list[str]: ...


class ConstantStepScorer:
    """A PRE stand-in that needs no model: every step scores `value` (0.0: PRE plays no part)."""

    def __init__(self, value: float = 0.0) -> None:
        if not -1.0 <= value <= 1.0:
            raise ValueError("a PRE lies in [-1, 1]")
        self.value = value

    async def score(self, problem: Problem, partial: Partial, steps: Sequence[Sequence[int]]) -> list[float]:
        return [self.value] * len(steps)


@dataclass(frozen=True)
class StepAssessment:
    terminal: bool
    pre: float


@dataclass(frozen=True)
class LeafEvaluation:
    value: float  # V(leaf) of the module docstring
    hre: float | None  # H; None when unfinished and not rolled out
    pre: float  # P, the path's PRE in V
    formatted: bool  # F
    answer: str | None  # the committed answer the grader read (of the rollout, when one was made)
    rollout: str | None = None  # the student's continuation of an unfinished leaf


@dataclass(frozen=True)
class Evaluator:
    """Values the search's nodes: terminal check, HRE, optional rollout, format, path PRE and the formula."""

    terminal: TerminalCheck
    step_scorer: StepScorer
    rewards: RewardsConfig
    rollout: Rollout | None = None

    async def assess(self, problem: Problem, parent: Node, children: Sequence[Node]) -> list[StepAssessment]:
        """Terminality and step PRE of freshly created children of `parent`, asked concurrently."""
        if not children:
            return []
        terminals, pres = await asyncio.gather(
            asyncio.gather(*(self.terminal.is_terminal(problem.question, c.state) for c in children)),
            self.step_scorer.score(problem, parent.partial, [c.token_ids for c in children]),
        )
        return [StepAssessment(bool(t), max(-1.0, min(1.0, float(p)))) for t, p in zip(terminals, pres, strict=True)]

    async def evaluate(self, problem: Problem, leaf: Node) -> LeafEvaluation:
        """The leaf's value and what it was made of (module docstring)."""
        (evaluation,) = await self.evaluate_many(problem, [leaf])
        return evaluation

    async def evaluate_many(self, problem: Problem, leaves: Sequence[Node]) -> list[LeafEvaluation]:
        """`evaluate` of each leaf, the rollouts of the unfinished ones asked for in one call."""
        unfinished = [leaf for leaf in leaves if not leaf.terminal and self.rollout is not None and leaf.depth > 0]
        finishes = await self.rollout.finish(problem, [leaf.partial for leaf in unfinished]) if unfinished else []
        rollouts = {leaf.id: text for leaf, text in zip(unfinished, finishes, strict=True)}
        return [self._evaluation(problem, leaf, rollouts.get(leaf.id)) for leaf in leaves]

    def _evaluation(self, problem: Problem, leaf: Node, rollout: str | None) -> LeafEvaluation:
        path = leaf.path()[1:]
        graded = leaf.state if leaf.terminal else None if rollout is None else leaf.state + rollout
        hre = None if graded is None else hre_score(graded, problem.gold)
        formatted = leaf.terminal and worked_answer(leaf.state)
        pres, directions = [n.pre for n in path], [n.direction for n in path]
        return LeafEvaluation(
            value=leaf_value(pres, directions, hre or 0.0, self.rewards, formatted),
            hre=hre,
            pre=path_pre(pres, self.rewards.pre_discount),
            formatted=formatted,
            answer=None if graded is None else extract_answer(graded),
            rollout=rollout,
        )


def path_pre(pres: Sequence[float], discount: float) -> float:
    """The discounted mean of the steps' PREs from the root (0 for no steps)."""
    if not pres:
        return 0.0
    weights = [discount**i for i in range(len(pres))]
    return math.fsum(w * p for w, p in zip(weights, pres, strict=True)) / math.fsum(weights)


def leaf_value(
    pres: Sequence[float], directions: Sequence[str], hre: float, rewards: RewardsConfig, formatted: bool = False
) -> float:
    """V(leaf) of the module docstring; `directions` are the steps' directions, root excluded; `formatted` is F."""
    if len(pres) != len(directions):
        raise ValueError("one PRE per step and one direction per step")
    balance = sum(1 for d in directions if d == "right") - sum(1 for d in directions if d == "wrong")
    return (
        rewards.hre_weight * hre
        + rewards.pre_weight * path_pre(pres, rewards.pre_discount)
        - rewards.length_penalty * len(pres)
        + rewards.direction_bonus * balance
        + rewards.format_bonus * formatted
    )
