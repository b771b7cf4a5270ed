"""Trajectory sources: what the trainer consumes, one `Group` of trajectories per problem.

A source is any callable `(problem, rng, step) -> Group`; `step` is the example's index in the
run, so a source can seed per-example generators and a resumed run draws what a straight run
draws. The trainer knows nothing else about where trajectories come from, so a baseline (plain
sampling, SFT on reference solutions) is one more small class beside `MCTSSource`.

`MCTSSource` runs one tree search per problem (`mcts.search`) on an event loop that lives as long as
the run, because the teachers' HTTP clients are bound to the loop they were first used on. Each
example gets a fresh `StudentPolicy` (from `make_policy(step)`): its caches describe the policy of
the moment, which every update changes.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from typing import Protocol

from alphazero_llm.config import MCTSConfig, RewardsConfig
from alphazero_llm.data import Problem
from alphazero_llm.mcts import Evaluator, Proposer, Proposers, SearchResult, search
from alphazero_llm.mcts.evaluate import TerminalCheck
from alphazero_llm.models.policy import StudentPolicy
from alphazero_llm.models.teacher_client import NoTeacherAvailable
from alphazero_llm.trajectory import Group


class TrajectorySource(Protocol):
    def __call__(self, problem: Problem, rng: random.Random, step: int) -> Group: ...


class TeacherAccounting(Protocol):
    def metrics(self) -> dict[str, float]: ...


class LLMTeachers(Protocol):
    """What the source reads of the LLM teachers (a `TeacherEnsemble`): their running totals and who is out."""

    names: tuple[str, ...]

    @property
    def accounting(self) -> TeacherAccounting: ...

    def out_of_run(self) -> dict[str, str]: ...


def search_parts(
    policy: StudentPolicy,
    teachers: Proposer | None,
    terminal: TerminalCheck,
    mcts: MCTSConfig,
    rewards: RewardsConfig,
    credit: Callable[[str, float], None] | None = None,
) -> tuple[Proposers, Evaluator]:
    """The search's LLMs and its evaluator, with the student in every role `mcts` asks of it."""
    proposers = Proposers(
        teacher=teachers,
        encode=policy.encode,
        student=policy if mcts.num_student > 0 else None,
        prior=policy if mcts.selection == "puct" else None,
        credit=credit,
    )
    return proposers, Evaluator(terminal, policy, rewards, rollout=policy if mcts.rollout else None)


class MCTSSource:
    """One tree search per problem; its trajectories form the group (module docstring)."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        make_policy: Callable[[int], StudentPolicy],
        teachers: Proposer | None,
        terminal: TerminalCheck,
        mcts: MCTSConfig,
        rewards: RewardsConfig,
        *,
        credit: Callable[[str, float], None] | None = None,
        llm_teachers: LLMTeachers | None = None,
        continue_without_teachers: bool = False,
        on_search: Callable[[SearchResult, int], None] | None = None,
    ) -> None:
        self.loop = loop
        self.make_policy = make_policy
        self.teachers = teachers
        self.terminal = terminal
        self.mcts = mcts
        self.rewards = rewards
        self.credit = credit
        self.llm_teachers = llm_teachers
        self.continue_without_teachers = continue_without_teachers
        self.on_search = on_search  # called with each search's tree and the example's 1-based step
        self.last: SearchResult | None = None  # the latest tree, for a caller that inspects it

    def _teacher_totals(self) -> tuple[float, float]:
        if self.llm_teachers is None:
            return 0.0, 0.0
        m = self.llm_teachers.accounting.metrics()
        return m.get("teachers/total/cost_usd", 0.0), m.get("teachers/total/tokens_in", 0.0) + m.get(
            "teachers/total/tokens_out", 0.0
        )

    def _teachers_out(self) -> dict[str, str]:
        """The LLM teachers out of the run. Raises `NoTeacherAvailable` when that is all of them, unless the
        run was told to continue: a run whose teachers are gone would otherwise train on the student alone,
        silently. Raised after the search and before the update, so the example is not trained."""
        if self.llm_teachers is None:
            return {}
        out = self.llm_teachers.out_of_run()
        if len(out) < len(self.llm_teachers.names) or self.continue_without_teachers:
            return out
        reasons = "; ".join(f"{name}: {why}" for name, why in sorted(out.items()))
        raise NoTeacherAvailable(
            f"every LLM teacher is out of the run ({reasons}). Fix their keys or endpoints and rerun with --resume "
            "(it continues from the newest checkpoint), or pass --continue-without-teachers to go on without them"
        )

    def __call__(self, problem: Problem, rng: random.Random, step: int) -> Group:
        policy = self.make_policy(step)
        proposers, evaluator = search_parts(policy, self.teachers, self.terminal, self.mcts, self.rewards, self.credit)
        cost, tokens = self._teacher_totals()
        result = self.loop.run_until_complete(search(problem, proposers, evaluator, self.mcts, rng))
        cost_after, tokens_after = self._teacher_totals()
        self.last = result
        if self.on_search is not None:
            self.on_search(result, step + 1)  # before the teachers' check: a stopped run keeps its last tree
        out = self._teachers_out()
        stats = result.stats
        metrics = {
            "best_correct": float(result.best_correct),
            "tree_nodes": stats.nodes,
            "tree_depth": stats.max_depth,
            "teacher_calls": sum(v for k, v in stats.proposer_calls.items() if not k.startswith("student")),
            "student_tokens": policy.tokens_used(),
            "teacher_tokens": tokens_after - tokens,
            "cost_usd": cost_after - cost,
            "search_s": stats.wall_time_s,
        }
        if self.llm_teachers is not None:
            metrics["teachers_out"] = out  # name -> why it was taken out of the run, so far
        return Group(
            problem=problem,
            prompt_ids=policy.prompt_ids(problem),
            trajectories=tuple(t for t in result.trajectories if t.completion_ids),
            temperature=policy.step_sampling.temperature,
            metrics=metrics,
        )
