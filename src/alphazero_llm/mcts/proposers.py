"""What the search asks of the LLMs (small protocols), and adapters from the real models to them.

The search only sees these protocols, so tests pass scripted fakes and runs pass:

- `TeacherProposer`: a `TeacherEnsemble` as the "right"/"wrong" proposer; its `credit` feeds the
  backed-up values to the ensemble's bandit (`TeacherEnsemble.update`).
- `StudentAdapter`: one `StudentModel` as the student's proposer, PUCT prior scorer, PRE step
  scorer and rollout, behind one lock (the model runs one call at a time, in a worker thread so
  that the teachers' HTTP requests stay in flight meanwhile).

The student is asked as the policy that training updates: its steps and rollouts continue its own
answer, i.e. the chat-templated question (system prompt + question) followed by the solution so
far, exactly the context in which the loss scores a trajectory's tokens. Its steps are thus samples
of that policy (GRPO's ratio assumes so), not replies to the teachers' "write the next step"
instructions, which a small model answers with talk about steps rather than with a step.

Per-step PRE (`StudentAdapter.score`) is the rubric's PRE (`rewards.pre_reward`) applied to one
step: ppl(step | question, earlier steps), from the student's log-probs of the step's tokens
after the chat-templated question and the earlier steps, against ppl(reference solution |
question), cached per question. PUCT priors use the same conditional log-probs, averaged per
token (so that a long step is not penalised for its length) and softmaxed over the siblings.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from alphazero_llm.models.prompts import first_line
from alphazero_llm.rewards import perplexity, pre_reward

if TYPE_CHECKING:
    from alphazero_llm.models.student import StudentModel
    from alphazero_llm.models.teachers import TeacherEnsemble

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ProposedStep:
    """One next step; `producer` made it (a teacher's name, or "student"), `producers` all who did."""

    text: str
    producer: str
    producers: tuple[str, ...] = ()


class Proposer(Protocol):
    name: str

    async def propose(self, question: str, partial_solution: str, direction: str, n: int) -> list[ProposedStep]:
        """Up to `n` next steps in `direction` ("right", "wrong" or "student"); may raise on failure."""
        ...

    def tokens_used(self) -> int:
        """Tokens spent so far (a running total; the search reports the difference)."""
        ...


class PriorScorer(Protocol):
    async def logprobs(self, question: str, partial_solution: str, steps: Sequence[str]) -> list[float]:
        """The student's log-probability of each candidate step (any monotone score; softmaxed by the search)."""
        ...


@dataclass(frozen=True)
class Proposers:
    """The search's LLMs. `credit(producer, value)` receives every backed-up value through a teacher step."""

    teacher: Proposer | None
    student: Proposer | None = None
    prior: PriorScorer | None = None
    credit: Callable[[str, float], None] | None = None


# --- teachers -------------------------------------------------------------------------------------


class TeacherProposer:
    """A `TeacherEnsemble` behind the `Proposer` protocol."""

    name = "teachers"

    def __init__(self, ensemble: TeacherEnsemble) -> None:
        self.ensemble = ensemble

    async def propose(self, question: str, partial_solution: str, direction: str, n: int) -> list[ProposedStep]:
        from alphazero_llm.models.teacher_client import ProposalFailed

        proposal = await self.ensemble.propose_detailed(question, partial_solution, direction, n)  # type: ignore[arg-type]
        if n > 0 and proposal.answered == 0:
            raise ProposalFailed(f"all {n} {direction!r} requests failed: {sorted(set(proposal.errors))}")
        return [ProposedStep(s.text, s.teacher, s.teachers or (s.teacher,)) for s in proposal.steps]

    def tokens_used(self) -> int:
        metrics = self.ensemble.accounting.metrics()
        return int(metrics.get("teachers/total/tokens_in", 0) + metrics.get("teachers/total/tokens_out", 0))

    def credit(self, producer: str, value: float) -> None:
        if producer in self.ensemble.names:  # the bandit only knows teachers
            self.ensemble.update(producer, value)

    def proposers(self, student: StudentAdapter | None = None, *, puct: bool = False) -> Proposers:
        return Proposers(
            teacher=self,
            student=student,
            prior=student if (puct and student is not None) else None,
            credit=self.credit,
        )


# --- the student ----------------------------------------------------------------------------------


class StudentAdapter:
    """Proposer, prior scorer, PRE step scorer and rollout on one `StudentModel`."""

    name = "student"

    def __init__(
        self,
        model: StudentModel,
        *,
        max_new_tokens: int,
        temperature: float,
        top_p: float,
        seed: int,
        references: Mapping[str, str] | None = None,
        system_prompt: str | None = None,
        rollout_tokens: int = 256,
    ) -> None:
        self.model = model
        self.max_new_tokens = max_new_tokens
        self.temperature = temperature
        self.top_p = top_p
        self.references = dict(references or {})  # question -> reference solution, for PRE
        self.system_prompt = system_prompt
        self.rollout_tokens = rollout_tokens
        self._seed = seed
        self._tokens = 0
        self._lock = asyncio.Lock()
        self._reference_ppl: dict[str, float] = {}
        self._step_logprobs: dict[tuple[str, str, str], list[float]] = {}

    def tokens_used(self) -> int:
        return self._tokens

    def _next_seed(self) -> int:
        self._seed += 1
        return self._seed

    async def _run(self, fn: Callable, *args, **kwargs):
        async with self._lock:
            return await asyncio.to_thread(fn, *args, **kwargs)

    async def _continue(self, question: str, partial_solution: str, n: int, max_new_tokens: int) -> list[str]:
        """`n` samples of how the student's own answer goes on after `partial_solution`."""
        texts = (
            await self._run(
                self.model.generate_ids,
                [self._answer_ids(question, partial_solution)],
                n=n,
                max_new_tokens=max_new_tokens,
                temperature=self.temperature,
                top_p=self.top_p,
                seed=self._next_seed(),
            )
        )[0]
        self._tokens += sum(len(self.model.tokenizer(t, add_special_tokens=False)["input_ids"]) for t in texts)
        return texts

    async def propose(self, question: str, partial_solution: str, direction: str, n: int) -> list[ProposedStep]:
        # The student has one direction, its own: the next line of its answer (module docstring).
        texts = await self._continue(question, partial_solution, n, self.max_new_tokens)
        steps = [first_line(t) for t in texts]
        return [ProposedStep(s, self.name, (self.name,)) for s in steps if s]

    async def finish(self, question: str, partial_solution: str) -> str:
        return (await self._continue(question, partial_solution, 1, self.rollout_tokens))[0].strip()

    def _question_messages(self, question: str) -> list[dict[str, str]]:
        system = [{"role": "system", "content": self.system_prompt}] if self.system_prompt else []
        return [*system, {"role": "user", "content": question}]

    def _answer_ids(self, question: str, partial_solution: str) -> list[int]:
        """The templated question, then the solution so far and a line break: where the next step starts."""
        prompt = self.model.prompt_ids(self._question_messages(question))
        if not partial_solution:
            return prompt
        return prompt + self.model.tokenizer(partial_solution + "\n", add_special_tokens=False)["input_ids"]

    def _conditional_logprobs(self, question: str, previous: str, steps: Sequence[str]) -> list[list[float]]:
        tok = self.model.tokenizer
        prompt = self._answer_ids(question, previous)
        ids = [tok(s, add_special_tokens=False)["input_ids"] for s in steps]
        import torch  # only the real student needs it; the search and its fakes do not

        with torch.no_grad():  # token_logprobs keeps the caller's grad mode; scoring needs none
            out = self.model.token_logprobs([prompt] * len(steps), ids)
        return [[float(x) for x in lp] for lp in out]

    async def _logprobs(self, question: str, previous: str, steps: Sequence[str]) -> list[list[float]]:
        missing = [s for s in dict.fromkeys(steps) if (question, previous, s) not in self._step_logprobs]
        if missing:
            scored = await self._run(self._conditional_logprobs, question, previous, missing)
            for step, lp in zip(missing, scored, strict=True):
                self._step_logprobs[(question, previous, step)] = lp
        return [self._step_logprobs[(question, previous, s)] for s in steps]

    async def logprobs(self, question: str, partial_solution: str, steps: Sequence[str]) -> list[float]:
        scored = await self._logprobs(question, partial_solution, steps)
        return [math.fsum(lp) / len(lp) if lp else -math.inf for lp in scored]

    async def score(self, question: str, previous: str, steps: Sequence[str]) -> list[float]:
        if question not in self.references:
            raise KeyError("StudentAdapter.score needs the question's reference solution (references=...)")
        if question not in self._reference_ppl:
            (lp,) = await self._run(
                self.model.completion_logprobs, [self._question_messages(question)], [self.references[question]]
            )
            self._reference_ppl[question] = perplexity([float(x) for x in lp])
        ref = self._reference_ppl[question]
        scored = await self._logprobs(question, previous, steps)
        return [-1.0 if not lp else pre_reward(perplexity(lp), ref) for lp in scored]
