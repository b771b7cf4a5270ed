"""The baselines the tree must beat, as trajectory sources beside `MCTSSource` (`--source`).

- `SampleSource` (`--source sample`): plain GRPO, what TRL's GRPOTrainer does. `sample.group_size`
  whole answers per question are sampled from the student (models.yaml's temperature and top-p, at
  most `sample.max_new_tokens` tokens each, stopping after the first `#### N` line) and valued by the
  search's own leaf value (`mcts.evaluate.leaf_value`, training.yaml's `rewards`): the answer is a
  path of one student step, so its PRE is that step's PRE and its HRE grades the text. No tree, no
  teachers. The GRPO loss then learns from the group's advantages.
- `SFTSource` (`--source sft`): supervised fine-tuning on the data set's reference solution, as
  rStar-Math's round 1 trains on verified trajectories. The group is the one reference solution,
  tokenised line by line exactly as the tree's all-reference path is (`mcts.tree.teacher_step_text`,
  calculator annotations stripped), with reward 1; the legacy loss with that reward is the
  token-mean NLL (plus `legacy.kl_weight` x KL to the base model), scored at temperature 1.

Both record what the tree records per example (student tokens, teacher tokens, the time spent), so
the arms can be compared at equal budget; the Trainer adds the tokens trained on.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable

from alphazero_llm.answers import extract_answer
from alphazero_llm.config import ModelsConfig, RewardsConfig, SampleConfig
from alphazero_llm.data import Problem
from alphazero_llm.mcts.evaluate import TerminalCheck, leaf_value
from alphazero_llm.mcts.proposers import Partial
from alphazero_llm.mcts.reference_teacher import solution_lines
from alphazero_llm.mcts.tree import teacher_step_text
from alphazero_llm.models.policy import StudentPolicy
from alphazero_llm.models.sampling import Sampling
from alphazero_llm.rewards import hre_score
from alphazero_llm.trajectory import Group, Step, Trajectory
from alphazero_llm.worked import worked_answer

# The reward of the reference solution: the legacy loss weighs its NLL by (reward - min_reward_threshold).
SFT_REWARD = 1.0


class SampleSource:
    """Plain GRPO: a group of the student's own whole answers per question (module docstring)."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        make_policy: Callable[[int], StudentPolicy],
        terminal: TerminalCheck,
        rewards: RewardsConfig,
        sample: SampleConfig,
        models: ModelsConfig,
    ) -> None:
        self.loop = loop
        self.make_policy = make_policy
        self.terminal = terminal
        self.rewards = rewards
        self.group_size = sample.group_size
        generation = models.generation
        self.sampling = Sampling(sample.max_new_tokens, generation.temperature, generation.top_p, stop_at_answer=True)

    def __call__(self, problem: Problem, rng: random.Random, step: int) -> Group:
        start = time.perf_counter()
        policy = self.make_policy(step)
        trajectories = self.loop.run_until_complete(self._group(policy, problem))
        best = max(trajectories, key=lambda t: t.reward, default=None)
        return Group(
            problem=problem,
            prompt_ids=policy.prompt_ids(problem),
            trajectories=tuple(t for t in trajectories if t.completion_ids),
            temperature=self.sampling.temperature,
            metrics={
                "best_correct": float(best is not None and best.hre == 1.0),
                "student_tokens": policy.tokens_used(),
                "teacher_tokens": 0,
                "cost_usd": 0.0,
                "search_s": time.perf_counter() - start,
            },
        )

    async def _group(self, policy: StudentPolicy, problem: Problem) -> list[Trajectory]:
        answers = await policy.answers(problem, self.sampling, self.group_size)
        texts = [policy.decode(ids) for ids in answers]
        terminals = await asyncio.gather(*(self.terminal.is_terminal(problem.question, t) for t in texts))
        pres = await policy.score(problem, Partial(""), answers)  # each answer is one step after the question
        return [
            self._trajectory(problem, ids, text, bool(terminal), max(-1.0, min(1.0, pre)))
            for ids, text, terminal, pre in zip(answers, texts, terminals, pres, strict=True)
        ]

    def _trajectory(self, problem: Problem, ids: list[int], text: str, terminal: bool, pre: float) -> Trajectory:
        hre = hre_score(text, problem.gold)
        formatted = terminal and worked_answer(text)
        return Trajectory(
            steps=(Step(text, tuple(ids), "student", "student", "student", pre),),
            reward=leaf_value([pre], ["student"], hre, self.rewards, formatted),
            terminal=terminal,
            hre=hre,
            pre=pre,
            formatted=formatted,
            answer=extract_answer(text),
            code="s",
        )


class SFTSource:
    """The reference solution as the one trajectory to imitate (module docstring)."""

    def __init__(self, make_policy: Callable[[int], StudentPolicy]) -> None:
        self.make_policy = make_policy

    def __call__(self, problem: Problem, rng: random.Random, step: int) -> Group:
        start = time.perf_counter()
        policy = self.make_policy(step)
        steps, state = [], ""
        for line in solution_lines(problem.solution):
            text = teacher_step_text(state, line)
            steps.append(Step(text, policy.encode(text), "reference", "reference", "right"))
            state += text
        trajectory = Trajectory(
            steps=tuple(steps),
            reward=SFT_REWARD,
            terminal=True,
            hre=hre_score(state, problem.gold),
            pre=None,
            formatted=worked_answer(state),
            answer=extract_answer(state),
            code="1" * len(steps),
        )
        return Group(
            problem=problem,
            prompt_ids=policy.prompt_ids(problem),
            trajectories=(trajectory,),
            temperature=1.0,
            metrics={
                "student_tokens": 0,
                "teacher_tokens": 0,
                "cost_usd": 0.0,
                "search_s": time.perf_counter() - start,
            },
        )
