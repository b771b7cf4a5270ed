"""The search: select -> expand -> evaluate -> backup, `num_iterations` times, over reasoning steps.

`search(question, gold, proposers, evaluator, config, rewards, rng)` is a function of its
arguments: no I/O, no config reads, no global RNG (every random choice draws from `rng`).

One simulation:

1. Select: from the root, descend by UCB1 or PUCT (`tree.select_child`) to a leaf. With
   `parallel_simulations > 1` each node passed gets a virtual loss, removed again by the backup.
2. Expand (a leaf that is not terminal, above `max_depth`): the teachers' `num_right` "right"
   and `num_wrong` "wrong" steps and the student's `num_student` are asked for at once
   (`asyncio.gather`). Steps are merged on their whitespace-normalised text (the first
   direction asked keeps it: right, then wrong, then student; every producer is recorded) and
   every distinct step becomes a child. A proposer that raises is logged and counted and the
   others' steps are kept. Each child is then checked for terminality and given its PRE (and,
   under PUCT, a prior: the student's log-probs softmaxed over the siblings). Then one child
   is chosen by the selection rule (an unvisited one under UCB1) and becomes the leaf.
   A leaf whose expansion yielded nothing is valued as it is and may be expanded again
   (up to `MAX_EXPAND_ATTEMPTS` times).
3. Evaluate the leaf (`evaluate.leaf_value`; formula in `mcts/evaluate.py`), once per node.
4. Backup the mean value along the path; every teacher whose step lies on the path is credited
   with the value (`Proposers.credit`, the ensemble's bandit).

The result holds the best path (most visited child at each level, Q as tiebreak), every
root-to-leaf trajectory of this one tree, and statistics.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections import Counter
from dataclasses import dataclass

from alphazero_llm.answers import extract_answer, worked_answer
from alphazero_llm.config import MCTSConfig, RewardsConfig
from alphazero_llm.mcts.evaluate import Evaluator, leaf_value
from alphazero_llm.mcts.proposers import ProposedStep, Proposer, Proposers
from alphazero_llm.mcts.tree import (
    PATH_CODE,
    Node,
    apply_virtual_loss,
    backup,
    best_path,
    child_state,
    new_root,
    release_virtual_loss,
    select_child,
    softmax,
)
from alphazero_llm.models.prompts import normalise_step
from alphazero_llm.rewards import hre_score

logger = logging.getLogger(__name__)

# A leaf whose proposers all failed is tried again on a later visit, but not forever.
MAX_EXPAND_ATTEMPTS = 2


@dataclass(frozen=True)
class Trajectory:
    """One root-to-leaf path: its text and the values GRPO needs."""

    leaf_id: int
    text: str
    steps: tuple[str, ...]
    directions: tuple[str, ...]
    code: str
    reward: float  # the evaluator's value of the leaf
    terminal: bool
    hre: float | None
    answer: str | None
    step_values: tuple[float, ...]  # Q of each step's node, root excluded
    step_visits: tuple[int, ...]
    visited: bool  # False for a child created by an expansion but never selected


@dataclass(frozen=True)
class TreeStats:
    nodes: int
    max_depth: int
    expanded: int
    mean_branching: float  # children per expanded node
    terminal_nodes: int
    iterations: int
    proposer_calls: dict[str, int]  # "teachers/right", "student/student", ...
    proposer_failures: dict[str, int]
    steps_proposed: int
    steps_merged: int
    proposer_tokens: int
    wall_time_s: float


@dataclass(frozen=True)
class SearchResult:
    question: str
    gold: str
    root: Node
    best_path: tuple[Node, ...]
    best_text: str
    best_answer: str | None
    best_correct: bool
    trajectories: tuple[Trajectory, ...]
    stats: TreeStats


async def search(
    question: str,
    gold: str,
    proposers: Proposers,
    evaluator: Evaluator,
    config: MCTSConfig,
    rewards: RewardsConfig,
    rng: random.Random,
) -> SearchResult:
    """Build one tree for `question` and return its best path, trajectories and statistics."""
    if config.rollout and evaluator.rollout is None:
        raise ValueError("mcts.rollout is on but the evaluator has no rollout")
    run = _Search(question, gold, proposers, evaluator, config, rewards, rng)
    start = time.perf_counter()
    await run.run()
    return run.result(time.perf_counter() - start)


class _Search:
    def __init__(
        self,
        question: str,
        gold: str,
        proposers: Proposers,
        evaluator: Evaluator,
        config: MCTSConfig,
        rewards: RewardsConfig,
        rng: random.Random,
    ) -> None:
        self.question, self.gold = question, gold
        self.proposers, self.evaluator = proposers, evaluator
        self.config, self.rewards, self.rng = config, rewards, rng
        self.root = new_root(question)
        self.next_id = 1
        self.started = 0
        # Virtual loss only matters with several simulations in flight; without it UCB1 is textbook.
        self.virtual = config.parallel_simulations > 1
        self.calls: Counter[str] = Counter()
        self.failures: Counter[str] = Counter()
        self.proposed = self.merged = 0
        self.tokens_at_start = {p.name: p.tokens_used() for p in self._proposer_list()}
        if config.selection == "puct" and proposers.prior is None:
            logger.warning("PUCT without a prior scorer: priors are uniform over siblings")

    def _proposer_list(self) -> list[Proposer]:
        found = [p for p in (self.proposers.teacher, self.proposers.student) if p is not None]
        return list({id(p): p for p in found}.values())

    async def run(self) -> None:
        async def worker() -> None:
            while self.started < self.config.num_iterations:
                self.started += 1
                await self.simulate()

        async with asyncio.TaskGroup() as group:
            for _ in range(min(self.config.parallel_simulations, self.config.num_iterations)):
                group.create_task(worker())

    # --- one simulation ---------------------------------------------------------------------------

    def _hold(self, path: list[Node], node: Node) -> None:
        path.append(node)
        if self.virtual:
            apply_virtual_loss([node])

    async def simulate(self) -> None:
        path: list[Node] = []
        self._hold(path, self.root)
        try:
            node, waited = self.root, False
            while True:
                if node.expanding is not None:  # another simulation is expanding it: share its children
                    await node.expanding.wait()
                    waited = True
                if not node.children:
                    break
                node = select_child(
                    node, self.config.selection, self.config.exploration_constant, self.config.virtual_loss, self.rng
                )
                waited = False
                self._hold(path, node)
            if not waited and self._expandable(node):
                await self._expand(node)
                if node.children:
                    child = select_child(
                        node,
                        self.config.selection,
                        self.config.exploration_constant,
                        self.config.virtual_loss,
                        self.rng,
                    )
                    self._hold(path, child)
            value = await self._value(path[-1])
        except BaseException:
            if self.virtual:
                release_virtual_loss(path)
            raise
        backup(path, value, virtual=self.virtual)
        self._credit(path, value)

    def _expandable(self, node: Node) -> bool:
        return (
            not node.terminal
            and node.depth < self.config.max_depth
            and not node.children
            and node.expand_attempts < MAX_EXPAND_ATTEMPTS
        )

    # --- expansion --------------------------------------------------------------------------------

    async def _propose(self, proposer: Proposer, state: str, direction: str, n: int) -> list[ProposedStep]:
        key = f"{proposer.name}/{direction}"
        self.calls[key] += 1
        try:
            return await proposer.propose(self.question, state, direction, n)
        except Exception as exc:  # any proposer failure: the other proposers' steps still count
            self.failures[key] += 1
            logger.warning("proposer %s failed (%s: %s); continuing without it", key, type(exc).__name__, exc)
            return []

    async def _expand(self, node: Node) -> None:
        node.expanding = asyncio.Event()
        node.expand_attempts += 1
        try:
            cfg, teacher, asks = self.config, self.proposers.teacher, []
            if teacher is not None:
                asks += [(teacher, "right", cfg.num_right), (teacher, "wrong", cfg.num_wrong)]
            if self.proposers.student is not None:
                asks.append((self.proposers.student, "student", cfg.num_student))
            asks = [a for a in asks if a[2] > 0]
            answers = await asyncio.gather(*(self._propose(p, node.state, d, n) for p, d, n in asks))
            children = self._merge(node, [(d, steps) for (_, d, _), steps in zip(asks, answers, strict=True)])
            await self._evaluate_children(node, children)
            node.children = children
            node.expanded = bool(children)
        finally:
            event, node.expanding = node.expanding, None
            event.set()

    def _merge(self, node: Node, answers: list[tuple[str, list[ProposedStep]]]) -> list[Node]:
        by_key: dict[str, Node] = {}
        for direction, steps in answers:
            for step in steps:
                self.proposed += 1
                key = normalise_step(step.text)
                if not key:
                    continue
                producers = step.producers or (step.producer,)
                old = by_key.get(key)
                if old is not None:
                    self.merged += 1
                    old.producers = (*old.producers, *(p for p in producers if p not in old.producers))
                    continue
                by_key[key] = Node(
                    id=self.next_id,
                    step=key,
                    state=child_state(node.state, key),
                    parent=node,
                    direction=direction,  # type: ignore[arg-type]
                    depth=node.depth + 1,
                    proposer=step.producer,
                    producers=producers,
                    code=node.code + PATH_CODE[direction],
                )
                self.next_id += 1
        return list(by_key.values())

    async def _evaluate_children(self, node: Node, children: list[Node]) -> None:
        if not children:
            return
        steps = [c.step for c in children]
        use_prior = self.config.selection == "puct" and self.proposers.prior is not None
        terminal = self.evaluator.terminal
        terminal_checks = asyncio.gather(*(terminal.is_terminal(self.question, c.state) for c in children))
        pres = self.evaluator.step_scorer.score(self.question, node.state, steps)
        if use_prior:
            terminals, pre_values, logprobs = await asyncio.gather(
                terminal_checks, pres, self.proposers.prior.logprobs(self.question, node.state, steps)
            )
            priors = softmax(logprobs)
        else:
            terminals, pre_values = await asyncio.gather(terminal_checks, pres)
            priors = [1.0 / len(children)] * len(children)
        for child, terminal, pre, prior in zip(children, terminals, pre_values, priors, strict=True):
            child.terminal = bool(terminal)
            child.pre = max(-1.0, min(1.0, float(pre)))
            child.prior = prior
            if child.terminal:
                child.hre = hre_score(child.state, self.gold)

    # --- evaluation and backup --------------------------------------------------------------------

    async def _value(self, leaf: Node) -> float:
        if leaf.leaf_value is None:
            hre = leaf.hre if leaf.terminal and leaf.hre is not None else 0.0
            if not leaf.terminal and self.config.rollout and self.evaluator.rollout is not None and leaf.depth > 0:
                continuation = await self.evaluator.rollout.finish(self.question, leaf.state)
                leaf.rollout_hre = hre = hre_score(child_state(leaf.state, continuation), self.gold)
            leaf.leaf_value = self._formula(leaf, hre)
        return leaf.leaf_value

    def _formula(self, leaf: Node, hre: float) -> float:
        path = leaf.path()[1:]
        formatted = leaf.terminal and worked_answer(leaf.state)
        return leaf_value([n.pre for n in path], [n.direction for n in path], hre, self.rewards, formatted)

    def _credit(self, path: list[Node], value: float) -> None:
        if self.proposers.credit is None:
            return
        for node in path:
            if node.direction in ("right", "wrong"):
                for producer in node.producers:
                    self.proposers.credit(producer, value)

    # --- the result -------------------------------------------------------------------------------

    def result(self, wall_time_s: float) -> SearchResult:
        nodes = list(self.root.iter_subtree())
        expanded = [n for n in nodes if n.children]
        chosen = best_path(self.root)
        best_text = chosen[-1].state
        trajectories = tuple(self._trajectory(n) for n in nodes if n.is_leaf and (n.depth > 0 or len(nodes) == 1))
        tokens = sum(max(0, p.tokens_used() - self.tokens_at_start.get(p.name, 0)) for p in self._proposer_list())
        stats = TreeStats(
            nodes=len(nodes),
            max_depth=max(n.depth for n in nodes),
            expanded=len(expanded),
            mean_branching=sum(len(n.children) for n in expanded) / len(expanded) if expanded else 0.0,
            terminal_nodes=sum(1 for n in nodes if n.terminal),
            iterations=self.root.visits,
            proposer_calls=dict(sorted(self.calls.items())),
            proposer_failures=dict(sorted(self.failures.items())),
            steps_proposed=self.proposed,
            steps_merged=self.merged,
            proposer_tokens=tokens,
            wall_time_s=wall_time_s,
        )
        return SearchResult(
            question=self.question,
            gold=self.gold,
            root=self.root,
            best_path=tuple(chosen),
            best_text=best_text,
            best_answer=extract_answer(best_text) if best_text else None,
            best_correct=bool(best_text) and hre_score(best_text, self.gold) == 1.0,
            trajectories=trajectories,
            stats=stats,
        )

    def _trajectory(self, leaf: Node) -> Trajectory:
        path = leaf.path()[1:]
        hre = leaf.hre if leaf.terminal else leaf.rollout_hre
        reward = leaf.leaf_value if leaf.leaf_value is not None else self._formula(leaf, hre or 0.0)
        return Trajectory(
            leaf_id=leaf.id,
            text=leaf.state,
            steps=tuple(n.step for n in path),
            directions=tuple(n.direction for n in path),
            code=leaf.code,
            reward=reward,
            terminal=leaf.terminal,
            hre=hre,
            answer=extract_answer(leaf.state) if leaf.state else None,
            step_values=tuple(n.q for n in path),
            step_visits=tuple(n.visits for n in path),
            visited=leaf.visits > 0,
        )
