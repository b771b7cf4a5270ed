"""The leaf value estimates reaching the gold answer: with the shipped weights a correct finish outranks every
other leaf, whatever the PREs, the teacher's labels or the `#### N` shape say."""

from __future__ import annotations

import asyncio

import pytest

from alphazero_llm.config import load_config
from alphazero_llm.data import Problem
from alphazero_llm.mcts import ConstantStepScorer, Evaluator, Partial
from alphazero_llm.mcts.tree import PATH_CODE, Node, new_root, teacher_step_text
from alphazero_llm.models.terminal import TerminalChecker

CONFIG = load_config()
PROBLEM = Problem("Tom has 3 apples and buys 4 more. How many apples does he have?", "7", "3 + 4 = 7\n#### 7", "q")


class ScriptedRollout:
    """Finishes a partial solution with the continuation scripted for its text."""

    def __init__(self, finishes: dict[str, str]) -> None:
        self.finishes = finishes

    async def finish(self, problem: Problem, partials: list[Partial]) -> list[str]:
        return [self.finishes[p.text] for p in partials]


def path(*steps: tuple[str, str, float]) -> Node:
    """A root-to-leaf path of (direction, line, PRE); the leaf is terminal when its text commits to an answer."""
    node = new_root()
    for i, (direction, line, pre) in enumerate(steps, start=1):
        text = teacher_step_text(node.state, line)
        node = Node(
            id=i, step=text, state=node.state + text, parent=node, direction=direction, depth=node.depth + 1,
            proposer=direction, code=node.code + PATH_CODE[direction], pre=pre,
        )  # fmt: skip
    node.terminal = "####" in node.state
    return node


LEAVES = {
    # Correct finishes, made to look as bad as possible otherwise: PRE -1, the student's own steps.
    "correct, PRE -1": path(("student", "3 + 4 = 7", -1.0), ("student", "#### 7", -1.0)),
    "correct by rollout, PRE -1": path(("student", "He buys 4 more.", -1.0)),
    # Everything else, made to look as good as possible: PRE +1, teacher-labelled "right", worked `#### N`.
    "wrong but worked, labelled right": path(("right", "3 + 5 = 8", 1.0), ("right", "#### 8", 1.0)),
    "a bare guess": path(("right", "#### 9", 1.0)),
    "reference prefix, unfinished": path(("right", "Tom starts with 3 apples.", 1.0)),
    "reference prefix, wrong finish": path(("right", "Tom starts with 3 apples.", 1.0), ("right", "So 5.", 1.0)),
}
ROLLOUTS = {
    "He buys 4 more.\n": "3 + 4 = 7\n#### 7",
    "Tom starts with 3 apples.\n": "He has 3 + 1 = 4\n#### 4",
    "Tom starts with 3 apples.\nSo 5.\n": "#### 5",
}


def values(rewards) -> dict[str, float]:
    terminal = TerminalChecker.rules_only(CONFIG.teachers.terminal_checker)
    evaluator = Evaluator(terminal, ConstantStepScorer(0.0), rewards, rollout=ScriptedRollout(ROLLOUTS))

    async def main() -> dict[str, float]:
        return {name: (await evaluator.evaluate(PROBLEM, leaf)).value for name, leaf in LEAVES.items()}

    return asyncio.run(main())


def test_a_correct_finish_outranks_every_other_leaf_with_the_shipped_weights() -> None:
    assert CONFIG.training.mcts.rollout  # unfinished leaves are valued by the student's rollout by default
    got = values(CONFIG.training.rewards)
    correct = [v for name, v in got.items() if name.startswith("correct")]
    others = {name: v for name, v in got.items() if not name.startswith("correct")}
    assert min(correct) > max(others.values()), got
    # Neither a teacher's "right" label nor the `#### N` shape earns anything by itself.
    assert others["a bare guess"] == pytest.approx(others["reference prefix, unfinished"])


def test_the_seeds_shape_terms_stay_available_as_options() -> None:
    """The direction bonus and the length penalty (the seed's) still act when set."""
    rewards = CONFIG.training.rewards
    shaped = type(rewards)(**{**rewards.__dict__, "direction_bonus": 0.1, "length_penalty": 0.01})
    plain, with_terms = values(rewards), values(shaped)
    assert with_terms["wrong but worked, labelled right"] == pytest.approx(
        plain["wrong but worked, labelled right"] + 2 * 0.1 - 2 * 0.01
    )
