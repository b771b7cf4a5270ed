"""Greedy GSM8K evaluation of the student: accuracy (`rewards.hre_score`), the rate of well-formed
`#### N` answers (`answers.extract_strict`) and of those its own work arrives at (`answers.worked_answer`),
each with a Wilson 95% interval, kept per question so that two evaluations of the same questions can be
compared pairwise (`mcnemar_exact`).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from alphazero_llm.answers import extract_strict, worked_answer
from alphazero_llm.models.prompts import question_messages
from alphazero_llm.models.sampling import Sampling
from alphazero_llm.rewards import hre_score

logger = logging.getLogger(__name__)

Z95 = 1.959963984540054  # two-sided 95% normal quantile


class Generator(Protocol):
    def generate(
        self, prompts: Sequence[Any], sampling: Sampling, *, n: int = 1, seed: int | None = None
    ) -> list[list[str]]: ...


@dataclass(frozen=True)
class EvalResult:
    """Per-question outcomes of one greedy evaluation, in the order of the rows."""

    correct_flags: tuple[bool, ...]
    format_flags: tuple[bool, ...]  # the answer has a parseable `#### N` line
    # Non-empty lines of each answer (empty when not recorded): a format rate bought by answering
    # "#### N" with no reasoning shows here as answers of one line.
    answer_lines: tuple[int, ...] = ()
    # The `#### N` answer is on the last numbered line of the answer's work (`answers.worked_answer`;
    # empty when not recorded).
    worked_flags: tuple[bool, ...] = ()

    def __post_init__(self) -> None:
        if len(self.correct_flags) != len(self.format_flags):
            raise ValueError("correct_flags and format_flags must have one entry per question")
        for name in ("answer_lines", "worked_flags"):
            if getattr(self, name) and len(getattr(self, name)) != len(self.correct_flags):
                raise ValueError(f"{name} must have one entry per question, or none")

    @property
    def total(self) -> int:
        return len(self.correct_flags)

    @property
    def correct(self) -> int:
        return sum(self.correct_flags)

    @property
    def formatted(self) -> int:
        return sum(self.format_flags)

    @property
    def worked(self) -> int:
        return sum(self.worked_flags)

    @property
    def accuracy(self) -> float:
        return self.correct / self.total if self.total else float("nan")

    @property
    def format_rate(self) -> float:
        return self.formatted / self.total if self.total else float("nan")

    @property
    def worked_rate(self) -> float:
        return self.worked / self.total if self.worked_flags else float("nan")

    @property
    def mean_answer_lines(self) -> float:
        return sum(self.answer_lines) / len(self.answer_lines) if self.answer_lines else float("nan")

    @property
    def accuracy_interval(self) -> tuple[float, float]:
        return wilson_interval(self.correct, self.total)

    @property
    def format_interval(self) -> tuple[float, float]:
        return wilson_interval(self.formatted, self.total)

    @property
    def worked_interval(self) -> tuple[float, float]:
        return wilson_interval(self.worked, self.total) if self.worked_flags else (math.nan, math.nan)

    def as_dict(self, prefix: str) -> dict[str, float]:
        (low, high), (f_low, f_high) = self.accuracy_interval, self.format_interval
        return {f"{prefix}/accuracy": self.accuracy, f"{prefix}/ci_low": low, f"{prefix}/ci_high": high,
                f"{prefix}/format_rate": self.format_rate, f"{prefix}/format_ci_low": f_low,
                f"{prefix}/format_ci_high": f_high, f"{prefix}/n": float(self.total)}  # fmt: skip

    def to_record(self) -> dict[str, Any]:
        """JSON-ready: the figures, and the per-question flags that `from_record` reads back."""
        (low, high), (f_low, f_high) = self.accuracy_interval, self.format_interval
        return {"correct": self.correct, "formatted": self.formatted, "total": self.total,
                "accuracy": self.accuracy, "low": low, "high": high,
                "format_rate": self.format_rate, "format_low": f_low, "format_high": f_high,
                "mean_answer_lines": self.mean_answer_lines if self.answer_lines else None,
                "worked": self.worked if self.worked_flags else None,
                "correct_flags": [int(f) for f in self.correct_flags],
                "format_flags": [int(f) for f in self.format_flags],
                "answer_lines": list(self.answer_lines),
                "worked_flags": [int(f) for f in self.worked_flags]}  # fmt: skip

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> EvalResult:
        return cls(
            tuple(bool(f) for f in record["correct_flags"]),
            tuple(bool(f) for f in record["format_flags"]),
            tuple(int(n) for n in record.get("answer_lines", ())),
            tuple(bool(f) for f in record.get("worked_flags", ())),
        )

    def __str__(self) -> str:
        (low, high), (f_low, f_high) = self.accuracy_interval, self.format_interval
        return (
            f"correct {self.correct}/{self.total} = {self.accuracy:.1%} (Wilson 95% CI {low:.1%}-{high:.1%}), "
            f"#### format {self.formatted}/{self.total} = {self.format_rate:.1%} (CI {f_low:.1%}-{f_high:.1%})"
            + (f", worked out {self.worked}/{self.total}" if self.worked_flags else "")
        )


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
    # At 0 (or n) successes the bound is exactly 0 (or 1); computed, it can land a rounding error
    # above 0 (below 1), outside the rate it should contain.
    low = 0.0 if successes == 0 else max(0.0, centre - half)
    high = 1.0 if successes == n else min(1.0, centre + half)
    return low, high


def mcnemar_exact(before: Sequence[bool], after: Sequence[bool]) -> tuple[int, int, float]:
    """Exact two-sided McNemar test of paired 0/1 outcomes on the same questions.

    Returns (gained, lost, p): `gained` questions went 0 -> 1, `lost` went 1 -> 0, and p is the
    two-sided binomial test of gained against Binomial(gained + lost, 1/2) (McNemar 1947, exact
    form): the chance of a split at least this uneven if training changed nothing.
    """
    if len(before) != len(after):
        raise ValueError(f"paired outcomes differ in length: {len(before)} vs {len(after)}")
    gained = sum(1 for b, a in zip(before, after, strict=True) if a and not b)
    lost = sum(1 for b, a in zip(before, after, strict=True) if b and not a)
    n = gained + lost
    if n == 0:
        return gained, lost, 1.0
    tail = math.fsum(math.comb(n, i) for i in range(min(gained, lost) + 1)) / 2**n
    return gained, lost, min(1.0, 2 * tail)


def evaluate_greedy(
    student: Generator,
    rows: Sequence[Mapping[str, Any]],
    system_prompt: str,
    max_new_tokens: int,
    *,
    batch_size: int = 8,
    progress: bool = True,
    desc: str = "evaluating",
) -> EvalResult:
    """Greedy (temperature 0) answers to `rows` ({question, answer}), each scored by hre_score, format and work.

    Generated `batch_size` prompts at a time (the student's own batch size), behind a progress bar.
    """
    if not rows:
        return EvalResult((), ())
    from tqdm.auto import tqdm

    prompts = [question_messages(r["question"], system_prompt) for r in rows]
    texts: list[str] = []
    with tqdm(total=len(prompts), desc=desc, unit="q", disable=not progress) as bar:
        for start in range(0, len(prompts), batch_size):
            chunk = prompts[start : start + batch_size]
            outputs = student.generate(chunk, Sampling.greedy_decoding(max_new_tokens))
            texts.extend(out[0] for out in outputs)
            bar.update(len(chunk))
    correct = tuple(hre_score(t, str(r["answer"])) == 1.0 for t, r in zip(texts, rows, strict=True))
    formatted = tuple(extract_strict(t) is not None for t in texts)
    lines = tuple(sum(1 for line in t.splitlines() if line.strip()) for t in texts)
    return EvalResult(correct, formatted, lines, tuple(worked_answer(t) for t in texts))
