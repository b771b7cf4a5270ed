"""The search with scripted proposers: visit counts, expansion, limits, backup, virtual loss, failures."""

from __future__ import annotations

import ast
import asyncio
import dataclasses
import importlib.util
import json
import math
import random
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest

from alphazero_llm.config import MCTSConfig, RewardsConfig, load_config
from alphazero_llm.data import Problem
from alphazero_llm.mcts import ConstantStepScorer, Evaluator, Partial, ProposedStep, Proposers, search
from alphazero_llm.mcts.export import to_dict, to_dot, to_html, to_json
from alphazero_llm.models.prompts import normalise_step
from alphazero_llm.models.terminal import TerminalChecker

CONFIG = load_config()
MCTS = CONFIG.training.mcts
RULES = TerminalChecker.rules_only(CONFIG.teachers.terminal_checker)
HRE_ONLY = RewardsConfig(hre_weight=1.0, pre_weight=0.0, length_penalty=0.0, direction_bonus=0.0, pre_discount=1.0)
Q = "Tom has 3 apples and buys 4 more. How many apples does he have?"
PROBLEM = Problem(question=Q, gold="7", solution="3 + 4 = 7\n#### 7", id="q0")


def encode(text: str) -> tuple[int, ...]:
    """The fakes' tokenizer: a step's UTF-8 bytes as its token ids."""
    return tuple(text.encode())


def cfg(**changes) -> MCTSConfig:
    base = dict(num_iterations=10, num_right=1, num_wrong=1, num_student=0, parallel_simulations=1, selection="ucb1")
    return dataclasses.replace(MCTS, **{**base, **changes})


def proposers(teacher=None, student=None, prior=None, credit=None) -> Proposers:
    return Proposers(teacher=teacher, encode=encode, student=student, prior=prior, credit=credit)


def evaluator(rewards: RewardsConfig = HRE_ONLY, pre: float = 0.0, terminal=RULES, rollout=None) -> Evaluator:
    return Evaluator(terminal, ConstantStepScorer(pre), rewards, rollout=rollout)


class Scripted:
    """A proposer whose steps are `fn(partial text, direction, n)`; optional delay and failure.

    A teacher's steps are lines of text; a student's (`student=True`) are sampled tokens: each
    line with its line break, its bytes as token ids, entered into the tree verbatim.
    """

    def __init__(
        self,
        name: str,
        fn: Callable[[str, str, int], list[str]],
        delay: float = 0.0,
        fail: Sequence[str] = (),
        in_flight: Counter[str] | None = None,
        student: bool = False,
    ):
        self.name, self.fn, self.delay, self.fail, self.student = name, fn, delay, set(fail), student
        self.calls: list[tuple[str, str, int]] = []
        self.tokens = 0
        # Shared between proposers to see calls overlap: "now" in flight, and the "max" seen.
        self.in_flight = Counter() if in_flight is None else in_flight

    async def propose(self, problem: Problem, partial: Partial, direction: str, n: int) -> list[ProposedStep]:
        assert problem is PROBLEM and partial.token_ids == encode(partial.text)
        self.calls.append((partial.text, direction, n))
        self.in_flight["now"] += 1
        self.in_flight["max"] = max(self.in_flight["max"], self.in_flight["now"])
        try:
            if self.delay:
                await asyncio.sleep(self.delay)
        finally:
            self.in_flight["now"] -= 1
        if direction in self.fail:
            raise ConnectionError(f"{self.name} is down")
        texts = self.fn(partial.text, direction, n)
        self.tokens += sum(len(t.split()) for t in texts)
        if self.student:
            return [
                ProposedStep(f"{t}\n", self.name, (self.name,), source="student", token_ids=encode(f"{t}\n"))
                for t in texts
            ]
        return [ProposedStep(t, self.name, (self.name,)) for t in texts]

    def tokens_used(self) -> int:
        return self.tokens


@dataclasses.dataclass(frozen=True)
class Counting(Evaluator):
    """An evaluator that records every leaf it is asked to value."""

    evaluated: list[int] = dataclasses.field(default_factory=list)

    async def evaluate_many(self, problem, leaves):  # `evaluate` goes through it too
        self.evaluated.extend(leaf.id for leaf in leaves)
        return await super().evaluate_many(problem, leaves)


def run(proposers, config, seed=0, evaluator=None):
    evaluator = evaluator or globals()["evaluator"]()
    return asyncio.run(search(PROBLEM, proposers, evaluator, config, random.Random(seed)))


def bandit(state: str, direction: str, n: int) -> list[str]:
    return ["3 + 4 = 7\n#### 7"] if direction == "right" else ["3 + 4 = 8\n#### 8"]


def chain(state: str, direction: str, n: int) -> list[str]:
    """Never terminal: numbered steps, `n` distinct per direction."""
    depth = state.count("\n")  # every step ends in a line break
    return [f"{direction} step {depth}.{i}" for i in range(n)]


def leaves_by_state(result) -> dict:
    return {n.state: n for n in result.root.iter_subtree() if n.is_leaf and n.depth > 0}


def test_search_module_imports_neither_answers_nor_rewards():
    spec = importlib.util.find_spec("alphazero_llm.mcts.search")
    assert spec is not None and spec.origin is not None
    tree = ast.parse(Path(spec.origin).read_text(encoding="utf-8"))
    imported: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ""
            imported.add(module)
            imported.update(f"{module}.{alias.name}" for alias in node.names)
    assert imported, "the parse found no imports at all"
    for name in ("answers", "rewards"):
        assert not [m for m in imported if name in m.split(".")], f"search imports {name}: {sorted(imported)}"


def test_visited_and_never_visited_leaves_are_valued_by_the_evaluator():
    # One iteration: the root's expansion creates a right and a wrong terminal leaf; only one is visited.
    # Find a seed under which the gold leaf is the one never visited.
    for seed in range(20):
        counting = Counting(RULES, ConstantStepScorer(0.0), HRE_ONLY)
        result = run(proposers(Scripted("t", bandit)), cfg(num_iterations=1), seed=seed, evaluator=counting)
        right, wrong = result.root.children
        if right.visits == 0:
            break
    else:
        pytest.fail("no seed left the right leaf unvisited")
    assert wrong.visits == 1 and right.terminal and wrong.terminal
    # Each leaf, visited or not, was valued exactly once, by `Evaluator.evaluate`.
    assert sorted(counting.evaluated) == sorted([right.id, wrong.id])
    assert right.evaluation is not None and wrong.evaluation is not None
    assert (right.evaluation.hre, right.evaluation.value, right.evaluation.answer) == (1.0, 1.0, "7")
    assert (wrong.evaluation.hre, wrong.evaluation.value, wrong.evaluation.answer) == (0.0, 0.0, "8")
    leaves = leaves_by_state(result)
    assert len(result.trajectories) == 2
    for t in result.trajectories:
        leaf = leaves[t.text]
        assert t.reward == leaf.evaluation.value and t.hre == leaf.evaluation.hre and t.visits == leaf.visits
    (unvisited,) = [t for t in result.trajectories if t.visits == 0]
    assert unvisited.terminal and unvisited.hre == 1.0 and unvisited.reward == 1.0 and unvisited.answer == "7"

    # Non-terminal leaves with a rollout: visited or not, each is rolled out and graded by the same method.
    class Finish:
        async def finish(self, problem, partials):
            return ["#### 7" if p.text.startswith("right") else "#### 9" for p in partials]

    counting = Counting(RULES, ConstantStepScorer(0.0), HRE_ONLY, rollout=Finish())
    result = run(proposers(Scripted("t", chain)), cfg(num_iterations=6, num_right=2), evaluator=counting)
    leaves = leaves_by_state(result)
    assert any(n.visits == 0 for n in leaves.values()) and any(n.visits for n in leaves.values())
    assert len(counting.evaluated) == len(set(counting.evaluated))  # once per node
    assert set(counting.evaluated) >= {n.id for n in leaves.values()}
    for t in result.trajectories:
        leaf = leaves[t.text]
        assert t.reward == leaf.evaluation.value
        assert t.hre == (1.0 if t.text.startswith("right") else 0.0)


def test_bandit_tree_exact_visit_counts():
    # Two terminal arms with values 1 and 0; textbook UCB1 (c = sqrt 2) gives 8/2 after 10 and 17/3 after 20.
    for iterations, expected in ((10, [8, 2]), (20, [17, 3])):
        for seed in range(3):
            result = run(proposers(Scripted("t", bandit)), cfg(num_iterations=iterations), seed=seed)
            root = result.root
            assert [c.visits for c in root.children] == expected
            assert root.visits == iterations
            assert root.children[0].q == 1.0 and root.children[1].q == 0.0
            assert result.best_correct and result.best.answer == "7"


def test_teacher_lines_enter_on_their_own_line_and_student_steps_verbatim():
    def steps(state: str, direction: str, n: int) -> list[str]:
        return [f"{direction}  step {state.count(chr(10))}"]

    result = run(
        proposers(Scripted("t", steps), Scripted("student", steps, student=True)),
        cfg(num_iterations=12, num_student=1),
    )
    for node in result.root.iter_subtree():
        if node.depth == 0:
            continue
        parent = node.parent
        assert node.state == parent.state + node.step and node.step.endswith("\n")
        assert node.state_ids == parent.state_ids + node.token_ids
        if node.direction == "student":
            assert node.source == "student" and node.token_ids == encode(node.step)
            assert node.step == f"student  step {parent.state.count(chr(10))}\n"  # as sampled, spaces kept
        else:
            assert node.source == "teacher" and node.token_ids == encode(node.step)
            assert node.step == normalise_step(node.step) + "\n"  # a whitespace-normalised line
    for t in result.trajectories:
        assert t.completion_ids == encode(t.text)


def test_every_child_is_kept_and_duplicates_merged():
    def many(state, direction, n):
        return [f"{direction} {i}" for i in range(n)] + ([" right   0 "] if direction == "wrong" else [])

    teacher = Scripted("t", many)
    result = run(proposers(teacher), cfg(num_iterations=1, num_right=10, num_wrong=10))
    root = result.root
    assert len(root.children) == 20  # ten right, ten wrong: none lost
    assert result.stats.steps_merged == 1 and result.stats.steps_proposed == 21
    assert [c.direction for c in root.children] == ["right"] * 10 + ["wrong"] * 10
    assert [c.code for c in root.children[:1] + root.children[10:11]] == ["1", "0"]
    assert len(result.trajectories) == 20
    assert sum(t.visits > 0 for t in result.trajectories) == 1


def test_expansion_asks_everyone_concurrently():
    in_flight: Counter[str] = Counter()
    teacher = Scripted("t", chain, delay=0.2, in_flight=in_flight)
    student = Scripted("student", chain, delay=0.2, in_flight=in_flight, student=True)
    result = run(proposers(teacher, student), cfg(num_iterations=3, num_student=2))
    assert result.stats.proposer_calls == {"student/student": 3, "t/right": 3, "t/wrong": 3}
    # Within one expansion the teacher's right and wrong requests and the student's are all in flight together.
    assert in_flight["max"] == 3
    assert {c.direction for c in result.root.children} == {"right", "wrong", "student"}
    assert result.root.children[-1].code == "s"


def test_terminal_nodes_are_never_expanded():
    teacher = Scripted("t", bandit)
    result = run(proposers(teacher), cfg(num_iterations=30))
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
    result = run(
        proposers(teacher=Scripted("t", steps), student=Scripted("s", steps, student=True)),
        cfg(num_student=2),
        evaluator=evaluator(rewards),
    )
    values = {t.text: t.reward for t in result.trajectories}
    # "#### 9" is well-formed but no work arrives at it: a guess earns no bonus. "The answer is 7." is
    # right but never states the answer in the asked format: it is not terminal.
    assert values == {
        "3 + 4 = 7 apples. #### 7\n": 1.25,
        "3 + 5 = 8 apples. #### 8\n": 0.25,
        "#### 9\n": 0.0,
        "The answer is 7.\n": 0.0,
    }
    formatted = {t.text.strip(): (t.terminal, t.formatted) for t in result.trajectories}
    assert formatted == {
        "3 + 4 = 7 apples. #### 7": (True, True),
        "3 + 5 = 8 apples. #### 8": (True, True),
        "#### 9": (True, False),
        "The answer is 7.": (False, False),
    }


def test_depth_limit():
    result = run(proposers(Scripted("t", chain)), cfg(num_iterations=60, max_depth=3))
    nodes = list(result.root.iter_subtree())
    assert result.stats.max_depth == 3
    assert all(not n.children for n in nodes if n.depth == 3)
    assert any(n.visits for n in nodes if n.depth == 3)


def test_value_backup_sums_up():
    rewards = RewardsConfig(hre_weight=0.4, pre_weight=0.6, length_penalty=0.01, direction_bonus=0.1, pre_discount=0.9)
    result = run(
        proposers(Scripted("t", chain)), cfg(num_iterations=25, num_right=2), evaluator=evaluator(rewards, pre=0.5)
    )
    for node in result.root.iter_subtree():
        if node.children:
            # an inner node's statistics are its children's, plus the one visit in which it was itself the
            # leaf (the child chosen right after its parent's expansion), before it was expanded
            own = 0 if node.evaluation is None else 1
            assert node.visits == sum(c.visits for c in node.children) + own
            assert node.value_sum == pytest.approx(
                sum(c.value_sum for c in node.children) + own * (node.evaluation.value if own else 0)
            )
        elif node.visits:
            assert node.q == pytest.approx(node.evaluation.value)
    assert result.root.visits == 25
    for t in result.trajectories:  # no HRE (never terminal), PRE 0.5 everywhere
        directions = [s.direction for s in t.steps]
        balance = directions.count("right") - directions.count("wrong")
        assert t.hre is None and t.pre == pytest.approx(0.5) and all(s.pre == 0.5 for s in t.steps)
        assert t.reward == pytest.approx(0.6 * 0.5 - 0.01 * len(t.steps) + 0.1 * balance)


def test_parallel_simulations_virtual_loss_returns_to_zero():
    teacher = Scripted("t", chain, delay=0.05)
    seen_in_flight = []

    class Watching:
        async def is_terminal(self, question, solution):
            seen_in_flight.append(sum(n.in_flight for n in root_holder[0].iter_subtree()) if root_holder else 0)
            return False

    root_holder: list = []

    async def go():
        from alphazero_llm.mcts.search import _Search

        s = _Search(
            PROBLEM,
            proposers(teacher),
            evaluator(terminal=Watching()),
            cfg(num_iterations=24, parallel_simulations=8, num_right=2),
            random.Random(0),
        )
        root_holder.append(s.root)
        await s.run()
        return await s.result(0.0)

    result = asyncio.run(go())
    assert all(n.in_flight == 0 for n in result.root.iter_subtree())
    assert result.root.visits == 24
    assert max(seen_in_flight) > 1  # several simulations really were in flight together
    # every node was expanded at most once, although simulations overlapped
    assert len(teacher.calls) == result.stats.expanded * 2


def test_a_failing_proposer_does_not_kill_the_search(caplog):
    teacher = Scripted("t", chain, fail=("wrong",))
    student = Scripted("student", chain, fail=("student",), student=True)
    result = run(proposers(teacher, student), cfg(num_iterations=8, num_student=1))
    assert result.root.visits == 8
    assert result.stats.proposer_failures["t/wrong"] == result.stats.proposer_calls["t/wrong"] > 0
    assert result.stats.proposer_failures["student/student"] > 0
    assert all(n.direction == "right" for n in result.root.iter_subtree() if n.depth)
    assert "continuing without it" in caplog.text


def test_all_proposers_failing_leaves_a_valued_root():
    result = run(proposers(Scripted("t", chain, fail=("right", "wrong"))), cfg(num_iterations=5))
    assert result.root.visits == 5 and not result.root.children
    assert result.stats.proposer_calls["t/right"] == 2  # retried once, then given up
    assert result.best_text == "" and not result.best_correct
    assert result.root.evaluation is not None and result.best == result.root.evaluation


def test_same_seed_same_tree_and_different_seeds_differ():
    def snapshot(seed):
        r = run(
            proposers(Scripted("t", chain), Scripted("student", chain, student=True)),
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
        proposers(Scripted("t", bandit), credit=lambda name, v: credited.append((name, v))), cfg(num_iterations=10)
    )
    assert len(credited) == 10 and {name for name, _ in credited} == {"t"}
    assert sum(v for _, v in credited) == pytest.approx(result.root.value_sum)


def test_puct_priors_are_softmaxed_student_logprobs():
    class Prior:
        async def logprobs(self, problem, partial, steps):
            assert problem is PROBLEM and all(isinstance(t, int) for s in steps for t in s)
            return [math.log(i + 1) for i in range(len(steps))]

    config = cfg(num_iterations=5, selection="puct", num_right=3, num_wrong=0, exploration_constant=1.0)
    result = run(proposers(Scripted("t", chain), prior=Prior()), config)
    assert [c.prior for c in result.root.children] == pytest.approx([1 / 6, 2 / 6, 3 / 6])
    assert result.root.children[2].visits >= result.root.children[0].visits


def test_rollout_scores_non_terminal_leaves_with_hre():
    class Finish:
        async def finish(self, problem, partials):
            return ["#### 7" if p.text.startswith("right") else "#### 9" for p in partials]

    result = run(
        proposers(Scripted("t", chain)), cfg(num_iterations=10, rollout=True), evaluator=evaluator(rollout=Finish())
    )
    right, wrong = result.root.children
    assert right.q == 1.0 and wrong.q == 0.0 and right.visits > wrong.visits
    for leaf in leaves_by_state(result).values():  # every leaf was rolled out and graded
        on_right = leaf.state.startswith("right")
        assert leaf.evaluation.rollout == ("#### 7" if on_right else "#### 9")
        assert (leaf.evaluation.hre, leaf.evaluation.answer) == ((1.0, "7") if on_right else (0.0, "9"))
    # Without a rollout the same leaves stay ungraded: the evaluator, not the config, decides.
    plain = run(proposers(Scripted("t", chain)), cfg(num_iterations=10, rollout=True))
    assert all(t.hre is None and t.reward == 0.0 for t in plain.trajectories)


def test_export_json_dot_html(tmp_path):
    result = run(proposers(Scripted("t", bandit)), cfg(num_iterations=10))
    data = json.loads(to_json(result))
    assert data["tree"]["visits"] == 10 and data["best_correct"] is True
    assert data["problem"]["id"] == "q0" and data["best"]["hre"] == 1.0
    assert len(data["trajectories"]) == 2
    child = data["tree"]["children"][0]
    assert child["source"] == "teacher" and child["evaluation"]["value"] == 1.0
    assert child["token_ids"] == list(encode(child["step"]))
    dot = to_dot(result)
    assert dot.startswith("digraph") and "N=8 Q=1.000" in dot and 'color="#cc0000"' in dot
    page = to_html(result)
    assert "<details" in page and "N=8 Q=1.000" in page and 'class="right best"' in page
    assert "<script" not in page and "http" not in page.replace("http-equiv", "")
