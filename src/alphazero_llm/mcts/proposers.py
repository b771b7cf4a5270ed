"""What the search asks of the LLMs: small protocols, and the teacher ensemble behind one of them.

The search only sees these protocols, so tests pass scripted fakes and runs pass:

- `TeacherProposer`: a `TeacherEnsemble` as the "right"/"wrong" proposer; its `credit` feeds the
  backed-up values to the ensemble's bandit (`TeacherEnsemble.update`).
- `models.policy.StudentPolicy`: the student as proposer, PUCT prior scorer and rollout.

A proposer sees the `Problem` and the partial solution as text *and* as token ids: teachers read
the text; the student continues the ids, so that its steps are samples of the policy in exactly
the context the loss scores them in. `Proposers.encode` tokenises the steps that arrive as text
(a teacher's line), once, when they enter the tree.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, Protocol

if TYPE_CHECKING:
    from alphazero_llm.data import Problem
    from alphazero_llm.models.teachers import TeacherEnsemble

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Partial:
    """A partial solution: its text, and the token ids that render it after the question's prompt."""

    text: str
    token_ids: tuple[int, ...] = ()


@dataclass(frozen=True)
class ProposedStep:
    """One next step; `producer` made it (a teacher's name, or "student"), `producers` all who did.

    A student step carries the `token_ids` it was sampled as, and `text` is their decoding, verbatim.
    Any other step is one line of text (`token_ids` None), tokenised by `Proposers.encode`.
    """

    text: str
    producer: str
    producers: tuple[str, ...] = ()
    source: Literal["student", "teacher", "reference"] = "teacher"
    token_ids: tuple[int, ...] | None = None


class Proposer(Protocol):
    name: str

    async def propose(self, problem: Problem, partial: Partial, direction: str, n: int) -> list[ProposedStep]:
        """Up to `n` next steps in `direction` ("right", "wrong" or "student"); may raise on failure."""
        ...

    def tokens_used(self) -> int:
        """Tokens spent so far (a running total; the search reports the difference)."""
        ...


class PriorScorer(Protocol):
    async def logprobs(self, problem: Problem, partial: Partial, steps: Sequence[Sequence[int]]) -> list[float]:
        """The student's log-probability of each candidate step (any monotone score; softmaxed by the search)."""
        ...


@dataclass(frozen=True)
class Proposers:
    """The search's LLMs and the student's tokenizer.

    `encode(text)` gives the token ids of a step that arrives as text; `credit(producer, value)`
    receives every backed-up value through a teacher step.
    """

    teacher: Proposer | None
    encode: Callable[[str], tuple[int, ...]]
    student: Proposer | None = None
    prior: PriorScorer | None = None
    credit: Callable[[str, float], None] | None = None


# --- teachers -------------------------------------------------------------------------------------


class TeacherProposer:
    """A `TeacherEnsemble` behind the `Proposer` protocol."""

    name = "teachers"

    def __init__(self, ensemble: TeacherEnsemble) -> None:
        self.ensemble = ensemble

    async def propose(self, problem: Problem, partial: Partial, direction: str, n: int) -> list[ProposedStep]:
        from alphazero_llm.models.teacher_client import ProposalFailed

        proposal = await self.ensemble.propose_detailed(problem.question, partial.text, direction, n)  # type: ignore[arg-type]
        if n > 0 and proposal.answered == 0:
            raise ProposalFailed(f"all {n} {direction!r} requests failed: {sorted(set(proposal.errors))}")
        return [ProposedStep(s.text, s.teacher, s.teachers or (s.teacher,)) for s in proposal.steps]

    def tokens_used(self) -> int:
        metrics = self.ensemble.accounting.metrics()
        return int(metrics.get("teachers/total/tokens_in", 0) + metrics.get("teachers/total/tokens_out", 0))

    def credit(self, producer: str, value: float) -> None:
        if producer in self.ensemble.names:  # the bandit only knows teachers
            self.ensemble.update(producer, value)
