"""Greedy GSM8K accuracy of the student, scored by `rewards.hre_score`, with a Wilson 95% interval."""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from alphazero_llm.rewards import hre_score

logger = logging.getLogger(__name__)

Z95 = 1.959963984540054  # two-sided 95% normal quantile


class Generator(Protocol):
    def generate(self, prompts: Sequence[Any], n: int = 1, max_new_tokens: int = 256, temperature: float = 0.7,
                 **kwargs: Any) -> list[list[str]]: ...  # fmt: skip


@dataclass(frozen=True)
class EvalResult:
    correct: int
    total: int
    low: float  # Wilson score interval, 95%
    high: float

    @property
    def accuracy(self) -> float:
        return self.correct / self.total if self.total else float("nan")

    def as_dict(self, prefix: str) -> dict[str, float]:
        return {f"{prefix}/accuracy": self.accuracy, f"{prefix}/ci_low": self.low, f"{prefix}/ci_high": self.high,
                f"{prefix}/n": float(self.total)}  # fmt: skip

    def __str__(self) -> str:
        return f"{self.correct}/{self.total} = {self.accuracy:.1%} (Wilson 95% CI {self.low:.1%}-{self.high:.1%})"


def wilson_interval(successes: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion (Wilson 1927); (0, 1) for n = 0.

    Chosen over the normal (Wald) interval because it stays inside [0, 1] and keeps its coverage
    near 0% and 100%, where a small student's accuracy lies.
    """
    if n == 0:
        return 0.0, 1.0
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def evaluate_greedy(
    student: Generator, rows: Sequence[Mapping[str, Any]], system_prompt: str, max_new_tokens: int
) -> EvalResult:
    """Greedy (temperature 0) answers to `rows` ({question, answer}), each scored 0/1 by hre_score."""
    if not rows:
        return EvalResult(0, 0, 0.0, 1.0)
    prompts = [[{"role": "system", "content": system_prompt}, {"role": "user", "content": r["question"]}] for r in rows]
    outputs = student.generate(prompts, n=1, max_new_tokens=max_new_tokens, temperature=0.0)
    correct = int(sum(hre_score(out[0], str(r["answer"])) for out, r in zip(outputs, rows, strict=True)))
    low, high = wilson_interval(correct, len(rows))
    return EvalResult(correct, len(rows), low, high)
