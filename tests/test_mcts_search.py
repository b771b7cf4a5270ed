"""The search with scripted proposers: visit counts, expansion, limits, backup, virtual loss, failures."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import math
import random
from collections import Counter
from collections.abc import Callable, Sequence

import pytest

from alphazero_llm.config import MCTSConfig, RewardsConfig, load_config
from alphazero_llm.mcts import ConstantStepScorer, Evaluator, ProposedStep, Proposers, search
from alphazero_llm.mcts.export import to_dict, to_dot, to_html, to_json
from alphazero_llm.models.terminal import TerminalChecker

CONFIG = load_config()
MCTS = CONFIG.training.mcts
RULES = TerminalChecker.rules_only(CONFIG.teachers.terminal_checker)
HRE_ONLY = RewardsConfig(hre_weight=1.0, pre_weight=0.0, length_penalty=0.0, direction_bonus=0.0, pre_discount=1.0)
Q = "Tom has 3 apples and buys 4 more. How many apples does he have?"


def cfg(**changes) -> MCTSConfig:
    base = dict(num_iterations=10, num_right=1, num_wrong=1, num_student=0, parallel_simulations=1, selection="ucb1")
    return dataclasses.replace(MCTS, **{**base, **changes})


class Scripted:
    """A proposer whose steps are `fn(state, direction, n)`; optional delay and failure."""

    def __init__(
        self,
        name: str,
        fn: Callable[[str, str, int], list[str]],
        delay: float = 0.0,
        fail: Sequence[str] = (),
        in_flight: Counter[str] | None = None,
    ):
        self.name, self.fn, self.delay, self.fail = name, fn, delay, set(fail)
        self.calls: list[tuple[str, str, int]] = []
        self.tokens = 0
        # Shared between proposers to see calls overlap: "now" in flight, and the "max" seen.
        self.in_flight = Counter() if in_flight is None else in_flight

    async def propose(self, question: str, state: str, direction: str, n: int) -> list[ProposedStep]:
        self.calls.append((state, direction, n))
        self.in_flight["now"] += 1
        self.in_flight["max"] = max(self.in_flight["max"], self.in_flight["now"])
        try:
            if self.delay:
                await asyncio.sleep(self.delay)
        finally:
            self.in_flight["now"] -= 1
        if direction in self.fail:
            raise ConnectionError(f"{self.name} is down")
        texts = self.fn(state, direction, n)
        self.tokens += sum(len(t.split()) for t in texts)
        return [ProposedStep(t, self.name, (self.name,)) for t in texts]

    def tokens_used(self) -> int:
        return self.tokens


EVAL = Evaluator(RULES, ConstantStepScorer(0.0))


def run(proposers, config, rewards=HRE_ONLY, seed=0, evaluator=EVAL, gold="7"):
    return asyncio.run(search(Q, gold, proposers, evaluator, config, rewards, random.Random(seed)))


def bandit(state: str, direction: str, n: int) -> list[str]:
    return ["3 + 4 = 7\n#### 7"] if direction == "right" else ["3 + 4 = 8\n#### 8"]


def chain(state: str, direction: str, n: int) -> list[str]:
    """Never terminal: numbered steps, `n` distinct per direction."""
    depth = state.count("\n") + 1 if state else 0
    return [f"{direction} step {depth}.{i}" for i in range(n)]


def test_bandit_tree_exact_visit_counts():
    # Two terminal arms with values 1 and 0; textbook UCB1 (c = sqrt 2) gives 8/2 after 10 and 17/3 after 20.
    for iterations, expected in ((10, [8, 2]), (20, [17, 3])):
        for seed in range(3):
            result = run(Proposers(Scripted("t", bandit)), cfg(num_iterations=iterations), seed=seed)
            root = result.root
            assert [c.visits for c in root.children] == expected
            assert root.visits == iterations
            assert root.children[0].q == 1.0 and root.children[1].q == 0.0
            assert result.best_correct and result.best_answer == "7"


def test_every_child_is_kept_and_duplicates_merged():
    def many(state, direction, n):
        return [f"{direction} {i}" for i in range(n)] + ([" right   0 "] if direction == "wrong" else [])

    teacher = Scripted("t", many)
    result = run(Proposers(teacher), cfg(num_iterations=1, num_right=10, num_wrong=10))
    root = result.root
    assert len(root.children) == 20  # ten right, ten wrong: none lost
    assert result.stats.steps_merged == 1 and result.stats.steps_proposed == 21
    assert [c.direction for c in root.children] == ["right"] * 10 + ["wrong"] * 10
    assert [c.code for c in root.children[:1] + root.children[10:11]] == ["1", "0"]
    assert len(result.trajectories) == 20
    assert sum(t.visited for t in result.trajectories) == 1


def test_expansion_asks_everyone_concurrently():
    in_flight: Counter[str] = Counter()
    teacher = Scripted("t", chain, delay=0.2, in_flight=in_flight)
    student = Scripted("student", chain, delay=0.2, in_flight=in_flight)
    result = run(Proposers(teacher, student), cfg(num_iterations=3, num_student=2))
    assert result.stats.proposer_calls == {"student/student": 3, "t/right": 3, "t/wrong": 3}
    # Within one expansion the teacher's right and wrong requests and the student's are all in flight together.
    assert in_flight["max"] == 3
    assert {c.direction for c in result.root.children} == {"right", "wrong", "student"}
    assert result.root.children[-1].code == "s"


def test_terminal_nodes_are_never_expanded():
    teacher = Scripted("t", bandit)
    result = run(Proposers(teacher), cfg(num_iterations=30))
    assert len(teacher.calls) == 2  # right + wrong of the root's one expansion
    assert all(not n.children for n in result.root.iter_subtree() if n.terminal)
    assert result.stats.terminal_nodes == 2


def test_format_bonus_ranks_right_over_worked_wrong_over_guess_and_uncommitted():
    def steps(state: str, direction: str, n: int) -> list[str]:
        return {
            "right": ["3 + 4 = 7 apples. #### 7"],  # a step is one line: the work precedes the marker
            "wrong": ["3 + 5 = 8 apples. #### 8"],
            "student": ["#### 9", "The answer is 7."],
        }[direction] if not state else []  # fmt: skip

    rewards = dataclasses.replace(HRE_ONLY, format_bonus=0.25)
    result = run(Proposers(teacher=Scripted("t", steps), student=Scripted("s", steps)), cfg(num_student=2), rewards)
    values = {t.text: t.reward for t in result.trajectories}
    # "#### 9" is well-formed but no work arrives at it: a guess earns no bonus. "The answer is 7." is
    # right but never states the answer in the asked format: it is not terminal.
    assert values == {
        "3 + 4 = 7 apples. #### 7": 1.25,
        "3 + 5 = 8 apples. #### 8": 0.25,
        "#### 9": 0.0,
        "The answer is 7.": 0.0,
    }


def test_depth_limit():
    result = run(Proposers(Scripted("t", chain)), cfg(num_iterations=60, max_depth=3))
    nodes = list(result.root.iter_subtree())
    assert result.stats.max_depth == 3
    assert all(not n.children for n in nodes if n.depth == 3)
    assert any(n.visits for n in nodes if n.depth == 3)


def test_value_backup_sums_up():
    rewards = RewardsConfig(hre_weight=0.4, pre_weight=0.6, length_penalty=0.01, direction_bonus=0.1, pre_discount=0.9)
    evaluator = Evaluator(RULES, ConstantStepScorer(0.5))
    result = run(Proposers(Scripted("t", chain)), cfg(num_iterations=25, num_right=2), rewards, evaluator=evaluator)
    for node in result.root.iter_subtree():
        if node.children:
            # an inner node's statistics are its children's, plus the one visit in which it was itself the
            # leaf (the child chosen right after its parent's expansion), before it was expanded
            own = 0 if node.leaf_value is None else 1
            assert node.visits == sum(c.visits for c in node.children) + own
            assert node.value_sum == pytest.approx(
                sum(c.value_sum for c in node.children) + own * (node.leaf_value or 0)
            )
        elif node.visits:
            assert node.q == pytest.approx(node.leaf_value)
    assert result.root.visits == 25
    for t in result.trajectories:  # no HRE (never terminal), PRE 0.5 everywhere
        balance = t.directions.count("right") - t.directions.count("wrong")
        assert t.reward == pytest.approx(0.6 * 0.5 - 0.01 * len(t.steps) + 0.1 * balance)


def test_parallel_simulations_virtual_loss_returns_to_zero():
    teacher = Scripted("t", chain, delay=0.05)
    seen_in_flight = []

    class Watching:
        async def is_terminal(self, question, solution):
            seen_in_flight.append(sum(n.in_flight for n in root_holder[0].iter_subtree()) if root_holder else 0)
            return False

    root_holder: list = []
    evaluator = Evaluator(Watching(), ConstantStepScorer(0.0))

    async def go():
        from alphazero_llm.mcts.search import _Search

        s = _Search(
            Q,
            "7",
            Proposers(teacher),
            evaluator,
            cfg(num_iterations=24, parallel_simulations=8, num_right=2),
            HRE_ONLY,
            random.Random(0),
        )
        root_holder.append(s.root)
        await s.run()
        return s.result(0.0)

    result = asyncio.run(go())
    assert all(n.in_flight == 0 for n in result.root.iter_subtree())
    assert result.root.visits == 24
    assert max(seen_in_flight) > 1  # several simulations really were in flight together
    # every node was expanded at most once, although simulations overlapped
    assert len(teacher.calls) == result.stats.expanded * 2


def test_a_failing_proposer_does_not_kill_the_search(caplog):
    teacher = Scripted("t", chain, fail=("wrong",))
    student = Scripted("student", chain, fail=("student",))
    result = run(Proposers(teacher, student), cfg(num_iterations=8, num_student=1))
    assert result.root.visits == 8
    assert result.stats.proposer_failures["t/wrong"] == result.stats.proposer_calls["t/wrong"] > 0
    assert result.stats.proposer_failures["student/student"] > 0
    assert all(n.direction == "right" for n in result.root.iter_subtree() if n.depth)
    assert "continuing without it" in caplog.text


def test_all_proposers_failing_leaves_a_valued_root():
    result = run(Proposers(Scripted("t", chain, fail=("right", "wrong"))), cfg(num_iterations=5))
    assert result.root.visits == 5 and not result.root.children
    assert result.stats.proposer_calls["t/right"] == 2  # retried once, then given up
    assert result.best_text == "" and not result.best_correct


def test_same_seed_same_tree_and_different_seeds_differ():
    def snapshot(seed):
        r = run(
            Proposers(Scripted("t", chain), Scripted("student", chain)),
            cfg(num_iterations=40, num_right=3, num_wrong=2, num_student=1),
            seed=seed,
        )
        d = to_dict(r)
        d["stats"].pop("wall_time_s")
        return json.dumps(d, sort_keys=True)

    assert snapshot(1) == snapshot(1)
    assert snapshot(1) != snapshot(2)


def test_credit_reaches_the_teachers_on_the_path():
    credited: list[tuple[str, float]] = []
    result = run(
        Proposers(Scripted("t", bandit), credit=lambda name, v: credited.append((name, v))), cfg(num_iterations=10)
    )
    assert len(credited) == 10 and {name for name, _ in credited} == {"t"}
    assert sum(v for _, v in credited) == pytest.approx(result.root.value_sum)


def test_puct_priors_are_softmaxed_student_logprobs():
    class Prior:
        async def logprobs(self, question, state, steps):
            return [math.log(i + 1) for i in range(len(steps))]

    config = cfg(num_iterations=5, selection="puct", num_right=3, num_wrong=0, exploration_constant=1.0)
    result = run(Proposers(Scripted("t", chain), prior=Prior()), config)
    assert [c.prior for c in result.root.children] == pytest.approx([1 / 6, 2 / 6, 3 / 6])
    assert result.root.children[2].visits >= result.root.children[0].visits


def test_rollout_scores_non_terminal_leaves_with_hre():
    class Finish:
        async def finish(self, question, partial):
            return "#### 7" if partial.startswith("right") else "#### 9"

    evaluator = Evaluator(RULES, ConstantStepScorer(0.0), rollout=Finish())
    result = run(Proposers(Scripted("t", chain)), cfg(num_iterations=10, rollout=True), evaluator=evaluator)
    right, wrong = result.root.children
    assert right.q == 1.0 and wrong.q == 0.0 and right.visits > wrong.visits
    with pytest.raises(ValueError, match="rollout"):
        run(Proposers(Scripted("t", chain)), cfg(rollout=True))


def test_export_json_dot_html(tmp_path):
    result = run(Proposers(Scripted("t", bandit)), cfg(num_iterations=10))
    data = json.loads(to_json(result))
    assert data["tree"]["visits"] == 10 and data["best_correct"] is True
    assert len(data["trajectories"]) == 2
    dot = to_dot(result)
    assert dot.startswith("digraph") and "N=8 Q=1.000" in dot and 'color="#cc0000"' in dot
    page = to_html(result)
    assert "<details" in page and "N=8 Q=1.000" in page and 'class="right best"' in page
    assert "<script" not in page and "http" not in page.replace("http-equiv", "")
