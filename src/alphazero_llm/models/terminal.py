"""Is a partial solution finished? Rules first, an LLM only for what the rules leave undecided.

The fast path is the grader's own notion of a committed answer (`alphazero_llm.answers`): a
`#### N` line or a `\\boxed{}`. When `use_llm` is set, solutions without a marker are asked
about through the teachers' `TeacherClient`, so the same concurrency and rate limits apply and
the calls land in the same accounting. Answers are cached per (question, solution).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping

from alphazero_llm.answers import extract, extract_strict
from alphazero_llm.config import TerminalCheckerConfig
from alphazero_llm.models.keys import resolve_api_key
from alphazero_llm.models.prompts import normalise_step, parse_yes_no, terminal_messages
from alphazero_llm.models.teacher_client import Completion, TeacherClient

logger = logging.getLogger(__name__)


def has_final_answer(solution: str) -> bool:
    """True when `solution` commits to a final answer: a `#### N` line or a `\\boxed{...}`."""
    return extract_strict(solution) is not None or extract(solution).method == "boxed"


class TerminalChecker:
    @classmethod
    def rules_only(cls, config: TerminalCheckerConfig) -> TerminalChecker:
        """A checker that decides by the rules alone: no LLM is asked, whatever `config.use_llm` says."""
        return cls(dataclasses.replace(config, use_llm=False))

    def __init__(
        self,
        config: TerminalCheckerConfig,
        client: TeacherClient | None = None,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.config = config
        self.client = client
        self.name = config.model.name
        if config.use_llm:
            if client is None:
                raise ValueError("terminal_checker.use_llm needs a TeacherClient")
            if self.name not in client.names:
                client.add(config.model, resolve_api_key(config.model, env))
        # One run asks about a few thousand nodes at most: a plain dict is small enough.
        self._cache: dict[tuple[str, str], bool] = {}
        self.counts = {"checks": 0, "rule_terminal": 0, "cache_hits": 0, "llm_calls": 0, "llm_undecided": 0}

    async def is_terminal(self, question: str, solution: str) -> bool:
        self.counts["checks"] += 1
        if has_final_answer(solution):
            self.counts["rule_terminal"] += 1
            return True
        if not self.config.use_llm or self.client is None:
            return False
        key = (question, normalise_step(solution))
        if key in self._cache:
            self.counts["cache_hits"] += 1
            return self._cache[key]
        self.counts["llm_calls"] += 1
        result = await self.client.complete(
            self.name, terminal_messages(question, solution), self.config.max_tokens, temperature=0.0
        )
        verdict = parse_yes_no(result.text) if isinstance(result, Completion) else None
        if verdict is None:
            # A failed call or an unclear reply: keep searching (not terminal), and ask again next time.
            self.counts["llm_undecided"] += 1
            return False
        self._cache[key] = verdict
        return verdict

    def metrics(self) -> dict[str, float]:
        return {f"terminal/{k}": float(v) for k, v in self.counts.items()}
