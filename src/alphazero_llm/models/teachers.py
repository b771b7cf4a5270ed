"""The teacher ensemble: LLMs proposing "right" and "wrong" next reasoning steps for the search.

`TeacherEnsemble.propose(question, partial_solution, direction, n)` sends `n` requests spread
over teachers chosen by the bandit, concurrently, through one `TeacherClient`; answers are cut
to one step, garbage is dropped and counted, and duplicates are merged with every producing
teacher recorded, so that the search can credit them.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from alphazero_llm.config import BanditConfig, TeacherClientConfig, TeacherModelConfig, TeachersConfig
from alphazero_llm.models.accounting import Accounting
from alphazero_llm.models.bandit import TeacherBandit
from alphazero_llm.models.keys import resolve_api_key
from alphazero_llm.models.prompts import DIRECTIONS, Direction, Message, cut_step, normalise_step, proposal_messages
from alphazero_llm.models.teacher_client import Completion, Failure, NoTeacherAvailable, ProposalFailed, TeacherClient

logger = logging.getLogger(__name__)


# --- the ensemble ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Step:
    """One proposed reasoning step. `teacher` produced it first; `teachers` lists every producer, in order."""

    text: str
    teacher: str
    direction: Direction
    teachers: tuple[str, ...] = ()
    count: int = 1  # answers merged into this step


@dataclass(frozen=True)
class Proposal:
    """What one `propose` call got: the steps and an account of every request."""

    steps: tuple[Step, ...]
    requested: int
    answered: int
    failed: int
    dropped: int
    merged: int
    errors: tuple[str, ...]


class TeacherEnsemble:
    """Teachers behind one `TeacherClient`, chosen per request by a bandit over their backed-up values."""

    def __init__(
        self,
        teachers: Sequence[TeacherModelConfig],
        client_config: TeacherClientConfig,
        bandit_config: BanditConfig,
        *,
        tokens_per_expansion: int,
        rng: random.Random,
        env: Mapping[str, str] | None = None,
    ) -> None:
        if not teachers:
            raise ValueError("an ensemble needs at least one teacher")
        if tokens_per_expansion <= 0:
            raise ValueError("tokens_per_expansion must be positive")
        keys = [resolve_api_key(t, env) for t in teachers]  # every missing key is an error before any request
        self.rng = rng
        self.tokens_per_expansion = tokens_per_expansion
        self.client = TeacherClient(client_config, rng)
        for teacher, key in zip(teachers, keys, strict=True):
            self.client.add(teacher, key)
        self.names = tuple(t.name for t in teachers)
        self.bandit = TeacherBandit(self.names, bandit_config)

    @classmethod
    def from_config(
        cls,
        config: TeachersConfig,
        *,
        tokens_per_expansion: int,
        rng: random.Random,
        tier: str | None = None,
        extra: Sequence[TeacherModelConfig] = (),
        env: Mapping[str, str] | None = None,
    ) -> TeacherEnsemble:
        """The teachers of `tier` plus `extra` ones (e.g. from `parse_teacher_spec`); names must not repeat."""
        teachers = (*config.tier(tier), *extra)
        names = [t.name for t in teachers]
        if len(set(names)) != len(names):
            raise ValueError(f"teacher names repeat: {names}")
        return cls(teachers, config.client, config.bandit, tokens_per_expansion=tokens_per_expansion, rng=rng, env=env)

    @property
    def accounting(self) -> Accounting:
        return self.client.accounting

    def update(self, teacher: str, value: float) -> None:
        """Credit `teacher` with a value the search backed up through one of its steps."""
        self.bandit.update(teacher, value)

    async def propose(self, question: str, partial_solution: str, direction: Direction, n: int) -> list[Step]:
        """Up to `n` distinct next steps. Raises `ProposalFailed` when every request failed."""
        proposal = await self.propose_detailed(question, partial_solution, direction, n)
        if n > 0 and proposal.answered == 0:
            raise ProposalFailed(f"all {n} {direction!r} requests failed: {sorted(set(proposal.errors))}")
        return list(proposal.steps)

    async def propose_detailed(self, question: str, partial_solution: str, direction: Direction, n: int) -> Proposal:
        """Like `propose`, but failures are reported in the result. Raises only `NoTeacherAvailable`."""
        if direction not in DIRECTIONS:
            raise ValueError(f"direction must be one of {list(DIRECTIONS)}, not {direction!r}")
        if n <= 0:
            return Proposal((), 0, 0, 0, 0, 0, ())
        available = self.client.available(self.names)
        if not available:
            raise self._none_left()
        messages = proposal_messages(question, partial_solution, direction)
        chosen = self.bandit.choose(n, self.rng, available)
        results = await asyncio.gather(*(self._ask(name, messages) for name in chosen))
        answers = [r for r in results if isinstance(r, Completion)]
        errors = tuple(f"{r.teacher}: {r.reason}" for r in results if isinstance(r, Failure))
        if not answers and not self.client.available(self.names):
            raise self._none_left()
        steps, dropped, merged = self._merge(answers, direction)
        if dropped or errors:
            logger.debug(
                "propose(%s, n=%d): %d steps, %d dropped, %d failed", direction, n, len(steps), dropped, len(errors)
            )
        return Proposal(tuple(steps), n, len(answers), len(errors), dropped, merged, errors)

    async def _ask(self, name: str, messages: list[Message]) -> Completion | Failure:
        # A teacher taken out mid-call hands its request to another teacher the bandit picks.
        while True:
            result = await self.client.complete(name, messages, self.tokens_per_expansion)
            if not (isinstance(result, Failure) and result.fatal):
                return result
            available = self.client.available(self.names)
            if not available:
                return result
            name = self.bandit.choose(1, self.rng, available)[0]

    def _merge(self, answers: Sequence[Completion], direction: Direction) -> tuple[list[Step], int, int]:
        by_key: dict[str, Step] = {}
        dropped = merged = 0
        for answer in answers:
            text = cut_step(answer.text)
            if text is None:
                dropped += 1
                self.accounting.stats(answer.teacher).dropped += 1
                continue
            key = normalise_step(text)
            old = by_key.get(key)
            if old is None:
                by_key[key] = Step(key, answer.teacher, direction, (answer.teacher,))
                continue
            merged += 1
            self.accounting.stats(answer.teacher).duplicates += 1
            producers = old.teachers if answer.teacher in old.teachers else (*old.teachers, answer.teacher)
            by_key[key] = Step(old.text, old.teacher, direction, producers, old.count + 1)
        return list(by_key.values()), dropped, merged

    def out_of_run(self) -> dict[str, str]:
        """The teachers taken out of the run (bad key, no credit, unknown model, unreachable), with why."""
        reasons = self.client.disabled_reasons()
        return {name: reasons[name] for name in self.names if name in reasons}

    def _none_left(self) -> NoTeacherAvailable:
        reasons = "; ".join(f"{n}: {r}" for n, r in self.client.disabled_reasons().items())
        return NoTeacherAvailable(f"no teacher is left in the run ({reasons})")

    def metrics(self) -> dict[str, float]:
        """Accounting counters, plus each teacher's bandit value and current choice probability."""
        out = self.accounting.metrics()
        available = self.client.available(self.names)
        probs = self.bandit.probabilities(available) if available else {}
        for name in self.names:
            out[f"teachers/{name}/value"] = self.bandit.mean(name)
            out[f"teachers/{name}/weight"] = probs.get(name, 0.0)
        return out

    async def aclose(self) -> None:
        await self.client.aclose()

    async def __aenter__(self) -> TeacherEnsemble:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()
