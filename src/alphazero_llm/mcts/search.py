"""The search: select -> expand -> evaluate -> backup, `num_iterations` times, over reasoning steps.

`search(problem, proposers, evaluator, config, rng)` is a function of its arguments: no I/O, no
config reads, no global RNG (every random choice draws from `rng`), and no grading: every value,
HRE and flag comes from the `Evaluator` (mctx's `recurrent_fn`).

One simulation:

1. Select: from the root, descend by UCB1 or PUCT (`tree.select_child`) to a leaf. With
   `parallel_simulations > 1` each node passed gets a virtual loss, removed again by the backup.
2. Expand (a leaf that is not terminal, above `max_depth`): the teachers' `num_right` "right"
   and `num_wrong` "wrong" steps and the student's `num_student` are asked for at once
   (`asyncio.gather`). Steps are merged on their whitespace-normalised text (the first
   direction asked keeps it, text and tokens: right, then wrong, then student; every producer is
   recorded) and every distinct step becomes a child. A student step enters as sampled, tokens and
   text; a teacher's line enters on a line of its own (`tree.teacher_step_text`), tokenised by
   `Proposers.encode`. A proposer that raises is logged and counted and the others' steps are
   kept. The evaluator then assesses the children (terminal? the step's PRE) and, under PUCT,
   the student's log-probs softmaxed over the siblings give their priors. Then one child is
   chosen by the selection rule (an unvisited one under UCB1) and becomes the leaf.
   A leaf whose expansion yielded nothing is valued as it is and may be expanded again
   (up to `MAX_EXPAND_ATTEMPTS` times).
3. Evaluate the leaf (`Evaluator.evaluate`, formula in `mcts/evaluate.py`), once per node.
4. Backup the mean value along the path; every teacher whose step lies on the path is credited
   with the value (`Proposers.credit`, the ensemble's bandit).

The result holds the best path (most visited child at each level, Q as tiebreak), every
root-to-leaf trajectory of this one tree (each leaf valued by the same `Evaluator.evaluate`,
visited or not), and statistics.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections import Counter
from dataclasses import dataclass

from alphazero_llm.config import MCTSConfig
from alphazero_llm.data import Problem
from alphazero_llm.mcts.evaluate import Evaluator, LeafEvaluation
from alphazero_llm.mcts.proposers import ProposedStep, Proposer, Proposers
from alphazero_llm.mcts.tree import (
    PATH_CODE,
    Node,
    apply_virtual_loss,
    backup,
    best_path,
    new_root,
    release_virtual_loss,
    select_child,
    softmax,
    teacher_step_text,
)
from alphazero_llm.models.prompts import normalise_step
from alphazero_llm.trajectory import Step, Trajectory

logger = logging.getLogger(__name__)

# A leaf whose proposers all failed is tried again on a later visit, but not forever.
MAX_EXPAND_ATTEMPTS = 2


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
    problem: Problem
    root: Node
    best_path: tuple[Node, ...]
    best: LeafEvaluation  # the evaluator's verdict on the best path's last node
    trajectories: tuple[Trajectory, ...]
    stats: TreeStats

    @property
    def best_text(self) -> str:
        return self.best_path[-1].state

    @property
    def best_correct(self) -> bool:
        return self.best.hre == 1.0


async def search(
    problem: Problem,
    proposers: Proposers,
    evaluator: Evaluator,
    config: MCTSConfig,
    rng: random.Random,
) -> SearchResult:
    """Build one tree for `problem` and return its best path, trajectories and statistics."""
    run = _Search(problem, proposers, evaluator, config, rng)
    start = time.perf_counter()
    await run.run()
    return await run.result(start)


class _Search:
    def __init__(
        self,
        problem: Problem,
        proposers: Proposers,
        evaluator: Evaluator,
        config: MCTSConfig,
        rng: random.Random,
    ) -> None:
        self.problem = problem
        self.proposers, self.evaluator = proposers, evaluator
        self.config, self.rng = config, rng
        self.root = new_root()
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

    async def _propose(self, proposer: Proposer, node: Node, direction: str, n: int) -> list[ProposedStep]:
        key = f"{proposer.name}/{direction}"
        self.calls[key] += 1
        try:
            return await proposer.propose(self.problem, node.partial, direction, n)
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
            answers = await asyncio.gather(*(self._propose(p, node, d, n) for p, d, n in asks))
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
                if step.token_ids is None:  # a line of text: it enters on a line of its own
                    text = teacher_step_text(node.state, key)
                    ids = tuple(self.proposers.encode(text))
                else:  # sampled: kept exactly as the student produced it
                    text, ids = step.text, tuple(step.token_ids)
                by_key[key] = Node(
                    id=self.next_id,
                    step=text,
                    state=node.state + text,
                    parent=node,
                    direction=direction,  # type: ignore[arg-type]
                    depth=node.depth + 1,
                    proposer=step.producer,
                    producers=producers,
                    source=step.source,
                    token_ids=ids,
                    state_ids=node.state_ids + ids,
                    code=node.code + PATH_CODE[direction],
                )
                self.next_id += 1
        return list(by_key.values())

    async def _evaluate_children(self, node: Node, children: list[Node]) -> None:
        if not children:
            return
        assessed = self.evaluator.assess(self.problem, node, children)
        if self.config.selection == "puct" and self.proposers.prior is not None:
            scored = self.proposers.prior.logprobs(self.problem, node.partial, [c.token_ids for c in children])
            assessments, logprobs = await asyncio.gather(assessed, scored)
            priors = softmax(logprobs)
        else:
            assessments, priors = await assessed, [1.0 / len(children)] * len(children)
        for child, assessment, prior in zip(children, assessments, priors, strict=True):
            child.terminal, child.pre, child.prior = assessment.terminal, assessment.pre, prior

    # --- evaluation and backup --------------------------------------------------------------------

    async def _value(self, leaf: Node) -> float:
        if leaf.evaluation is None:
            leaf.evaluation = await self.evaluator.evaluate(self.problem, leaf)
        return leaf.evaluation.value

    def _credit(self, path: list[Node], value: float) -> None:
        if self.proposers.credit is None:
            return
        for node in path:
            if node.direction in ("right", "wrong"):
                for producer in node.producers:
                    self.proposers.credit(producer, value)

    # --- the result -------------------------------------------------------------------------------

    async def result(self, started: float) -> SearchResult:
        nodes = list(self.root.iter_subtree())
        leaves = [n for n in nodes if n.is_leaf and (n.depth > 0 or len(nodes) == 1)]
        # Never-visited leaves are valued by the same evaluator as visited ones, in one batch.
        pending = [leaf for leaf in leaves if leaf.evaluation is None]
        for leaf, evaluation in zip(pending, await self.evaluator.evaluate_many(self.problem, pending), strict=True):
            leaf.evaluation = evaluation
        chosen = best_path(self.root)
        best = chosen[-1].evaluation or await self.evaluator.evaluate(self.problem, chosen[-1])
        expanded = [n for n in nodes if n.children]
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
            wall_time_s=time.perf_counter() - started,
        )
        return SearchResult(
            problem=self.problem,
            root=self.root,
            best_path=tuple(chosen),
            best=best,
            trajectories=tuple(_trajectory(leaf) for leaf in leaves),
            stats=stats,
        )


def _trajectory(leaf: Node) -> Trajectory:
    evaluation = leaf.evaluation
    assert evaluation is not None, "every leaf is evaluated before the trajectories are built"
    path = leaf.path()[1:]
    steps = tuple(
        Step(n.step, n.token_ids, n.source, n.proposer, n.direction, n.pre)  # type: ignore[arg-type]
        for n in path
    )
    return Trajectory(
        steps=steps,
        reward=evaluation.value,
        terminal=leaf.terminal,
        hre=evaluation.hre,
        pre=evaluation.pre,
        formatted=evaluation.formatted,
        answer=evaluation.answer,
        code=leaf.code,
        visits=leaf.visits,
    )
