"""The leaf evaluator: the same reward functions as the rubric, applied to a path of the tree.

For a leaf at depth d whose path from the root holds the steps s_1..s_d:

    V(leaf) = hre_weight * H  +  pre_weight * P  -  length_penalty * d  +  direction_bonus * (R - W)
              +  format_bonus * F

- H (HRE, `rewards.hre_score`): on a terminal leaf (the `TerminalCheck` says the solution
  states its final answer), hre_score(solution, gold), 0 or 1. On a non-terminal leaf it is 0,
  unless `mcts.rollout` is on: then the student finishes the solution (`Rollout.finish`) and
  H = hre_score(solution + continuation, gold). The rollout is made once per leaf and kept.
- P (PRE along the path): each step's PRE p_i in [-1, 1] is scored once, when its node is
  created, by a `StepScorer` given the question and the earlier steps. The path's PRE is their
  discounted mean from the root, P = sum_i g^(i-1) p_i / sum_i g^(i-1) with g = pre_discount,
  so that P stays in [-1, 1] like the rubric's PRE and the early steps, on which every later
  step builds, weigh the most. P = 0 at the root.
- d: the number of steps; R and W: how many of them a teacher proposed as "right" and as
  "wrong" (the student's own steps count in neither).
- F: 1 when the leaf is terminal and states its answer as `#### N`, the format the system prompt
  asks for, with N on the last numbered line of its work (`answers.worked_answer`); else 0. With H it
  ranks a right answer above a worked wrong one, and both above a solution that never commits
  to an answer. A bare "#### N" earns no F: paid for it, a small student learns to guess.

Every weight comes from `RewardsConfig` (config/training.yaml: rewards); nothing is hard-coded.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from alphazero_llm.config import RewardsConfig


class StepScorer(Protocol):
    """PRE of candidate next steps, each in [-1, 1], given the question and the solution so far."""

    async def score(self, question: str, previous: str, steps: Sequence[str]) -> list[float]: ...


class TerminalCheck(Protocol):
    """`models.terminal.TerminalChecker` fits this protocol as it is."""

    async def is_terminal(self, question: str, solution: str) -> bool: ...


class Rollout(Protocol):
    """Finishes a partial solution; returns only the continuation."""

    async def finish(self, question: str, partial_solution: str) -> str: ...


class ConstantStepScorer:
    """A PRE stand-in that needs no model: every step scores `value` (0.0: PRE plays no part)."""

    def __init__(self, value: float = 0.0) -> None:
        if not -1.0 <= value <= 1.0:
            raise ValueError("a PRE lies in [-1, 1]")
        self.value = value

    async def score(self, question: str, previous: str, steps: Sequence[str]) -> list[float]:
        return [self.value] * len(steps)


@dataclass(frozen=True)
class Evaluator:
    """What the search needs to value a leaf: a terminal check, a step scorer and an optional rollout."""

    terminal: TerminalCheck
    step_scorer: StepScorer
    rollout: Rollout | None = None


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
