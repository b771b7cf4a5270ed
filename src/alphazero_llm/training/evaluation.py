"""Greedy evaluation of the student on held-out questions, and the statistics that compare two of them.

The protocol (README, "Evaluation"):
- Greedy answers of up to `evaluation.max_new_tokens` (512) new tokens; generation stops at the end of
  the first `#### N` line. Each answer records its tokens and whether it hit the limit (truncated),
  so a "gain" that is only "now finishes inside the limit" shows as a change of truncation rate.
- Primary metric: accuracy (`rewards.hre_score`). Secondary: the environment's reward on the same
  answers (the rubric's weighted HRE + PRE, when a PRE scorer is given), the worked-out rate
  (`worked.worked_answer`), the `#### N` format rate, truncation and tokens.
- Every outcome is kept per question, in the rows' order, so that two evaluations of the same
  questions are compared pairwise (`mcnemar_exact`), with Wilson 95% intervals; the answer texts are
  written as JSONL beside the report (`write_answers`), so anyone can score them again.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from alphazero_llm.answers import extract_strict
from alphazero_llm.models.prompts import question_messages
from alphazero_llm.models.sampling import Sampler, Sampling
from alphazero_llm.rewards import hre_score
from alphazero_llm.worked import worked_answer

logger = logging.getLogger(__name__)

Z95 = 1.959963984540054  # two-sided 95% normal quantile


# PRE of answers: (chat prompts, answer texts, reference solutions) -> one PRE each (`PerplexityReward.score`).
PreScorer = Callable[[Sequence[Any], Sequence[str], Sequence[str]], list[float]]


@dataclass(frozen=True)
class EvalResult:
    """Per-question outcomes of one greedy evaluation, in the order of the rows."""

    correct_flags: tuple[bool, ...]
    format_flags: tuple[bool, ...]  # the answer has a parseable `#### N` line
    # Non-empty lines of each answer (empty when not recorded): a format rate bought by answering
    # "#### N" with no reasoning shows here as answers of one line.
    answer_lines: tuple[int, ...] = ()
    # The `#### N` answer is the result of the answer's own last, right calculation (`worked.worked_answer`;
    # empty when not recorded).
    worked_flags: tuple[bool, ...] = ()
    truncated_flags: tuple[bool, ...] = ()  # the answer hit the token limit before its `#### N` line or EOS
    answer_tokens: tuple[int, ...] = ()  # new tokens of each answer
    env_rewards: tuple[float, ...] = ()  # the environment's reward (rubric: weighted HRE + PRE) of each answer
    texts: tuple[str, ...] = field(default=(), compare=False)  # the answers (written as JSONL, not in the record)

    def __post_init__(self) -> None:
        if len(self.correct_flags) != len(self.format_flags):
            raise ValueError("correct_flags and format_flags must have one entry per question")
        for name in ("answer_lines", "worked_flags", "truncated_flags", "answer_tokens", "env_rewards", "texts"):
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
    def truncation_rate(self) -> float:
        return sum(self.truncated_flags) / self.total if self.truncated_flags else float("nan")

    @property
    def mean_tokens(self) -> float:
        return sum(self.answer_tokens) / len(self.answer_tokens) if self.answer_tokens else float("nan")

    @property
    def env_reward_mean(self) -> float:
        return math.fsum(self.env_rewards) / len(self.env_rewards) if self.env_rewards else float("nan")

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
                "truncated": sum(self.truncated_flags) if self.truncated_flags else None,
                "truncation_rate": self.truncation_rate if self.truncated_flags else None,
                "mean_tokens": self.mean_tokens if self.answer_tokens else None,
                "env_reward_mean": self.env_reward_mean if self.env_rewards else None,
                "correct_flags": [int(f) for f in self.correct_flags],
                "format_flags": [int(f) for f in self.format_flags],
                "answer_lines": list(self.answer_lines),
                "worked_flags": [int(f) for f in self.worked_flags],
                "truncated_flags": [int(f) for f in self.truncated_flags],
                "answer_tokens": list(self.answer_tokens),
                "env_rewards": list(self.env_rewards)}  # fmt: skip

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> EvalResult:
        return cls(
            tuple(bool(f) for f in record["correct_flags"]),
            tuple(bool(f) for f in record["format_flags"]),
            tuple(int(n) for n in record.get("answer_lines", ())),
            tuple(bool(f) for f in record.get("worked_flags", ())),
            tuple(bool(f) for f in record.get("truncated_flags", ())),
            tuple(int(n) for n in record.get("answer_tokens", ())),
            tuple(float(r) for r in record.get("env_rewards", ())),
        )

    def __str__(self) -> str:
        (low, high), (f_low, f_high) = self.accuracy_interval, self.format_interval
        return (
            f"correct {self.correct}/{self.total} = {self.accuracy:.1%} (Wilson 95% CI {low:.1%}-{high:.1%}), "
            f"#### format {self.formatted}/{self.total} = {self.format_rate:.1%} (CI {f_low:.1%}-{f_high:.1%})"
            + (f", worked out {self.worked}/{self.total}" if self.worked_flags else "")
            + (f", truncated {sum(self.truncated_flags)}/{self.total}" if self.truncated_flags else "")
            + (f", {self.mean_tokens:.0f} tokens/answer" if self.answer_tokens else "")
            + (f", environment reward {self.env_reward_mean:.3f}" if self.env_rewards else "")
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
    student: Sampler,
    rows: Sequence[Mapping[str, Any]],
    system_prompt: str,
    max_new_tokens: int,
    *,
    pre: PreScorer | None = None,
    rubric_weights: tuple[float, float] | None = None,
    batch_size: int = 8,
    progress: bool = True,
    desc: str = "evaluating",
) -> EvalResult:
    """Greedy answers to `rows` ({question, answer, info: {solution}}) under the module's protocol.

    `rubric_weights` (HRE, PRE) give each answer the environment's reward: hre_weight * HRE, plus
    pre_weight * PRE when `pre` scores PRE (as the rubric does with a student model). Generated
    `batch_size` prompts at a time, behind a progress bar.
    """
    if not rows:
        return EvalResult((), ())
    from tqdm.auto import tqdm

    chats = [question_messages(r["question"], system_prompt) for r in rows]
    sampling = Sampling.greedy_decoding(max_new_tokens, stop_at_answer=True)
    answers: list[list[int]] = []
    with tqdm(total=len(chats), desc=desc, unit="q", disable=not progress) as bar:
        for start in range(0, len(chats), batch_size):
            chunk = [student.prompt_ids(chat) for chat in chats[start : start + batch_size]]
            answers.extend(out[0] for out in student.sample_ids(chunk, sampling))
            bar.update(len(chunk))
    texts = [student.tokenizer.decode(ids, skip_special_tokens=True) for ids in answers]
    correct = tuple(hre_score(t, str(r["answer"])) == 1.0 for t, r in zip(texts, rows, strict=True))
    formatted = tuple(extract_strict(t) is not None for t in texts)
    # Cut off: the budget ran out before a `#### N` line ended the answer (an EOS ends it with fewer tokens).
    truncated = tuple(len(ids) >= max_new_tokens and not f for ids, f in zip(answers, formatted, strict=True))
    rewards: tuple[float, ...] = ()
    if rubric_weights is not None:
        hre_weight, pre_weight = rubric_weights
        rewards = tuple(hre_weight * c for c in correct)
        if pre is not None:
            pres = pre(chats, texts, [r["info"]["solution"] for r in rows])
            rewards = tuple(r + pre_weight * p for r, p in zip(rewards, pres, strict=True))
    return EvalResult(
        correct_flags=correct,
        format_flags=formatted,
        answer_lines=tuple(sum(1 for line in t.splitlines() if line.strip()) for t in texts),
        worked_flags=tuple(worked_answer(t) for t in texts),
        truncated_flags=truncated,
        answer_tokens=tuple(len(ids) for ids in answers),
        env_rewards=rewards,
        texts=tuple(texts),
    )


def shard_rows(total: int, batch_size: int, rank: int, world_size: int) -> list[int]:
    """The row indices rank `rank` evaluates: every `world_size`-th batch of `batch_size` rows, from batch `rank`.

    Whole batches, so each rank generates exactly the batches one process would (same padding, same greedy
    answers); the last, short batch stays last on its rank.
    """
    starts = range(rank * batch_size, total, world_size * batch_size)
    return [i for start in starts for i in range(start, min(total, start + batch_size))]


def merge_results(parts: Sequence[tuple[Sequence[int], EvalResult]], total: int) -> EvalResult:
    """One `EvalResult` in row order from the ranks' (row indices, result) parts, which cover `total` rows."""
    covered = sorted(i for indices, _ in parts for i in indices)
    if covered != list(range(total)):
        raise ValueError(f"the evaluation's parts cover rows {covered}, not each of {total} rows once")
    merged: dict[str, tuple[Any, ...]] = {}
    for name in (f.name for f in dataclasses.fields(EvalResult)):
        values: list[Any] = [None] * total
        for indices, result in parts:
            column = getattr(result, name)
            if column:
                for i, value in zip(indices, column, strict=True):
                    values[i] = value
        merged[name] = tuple(values) if all(v is not None for v in values) else ()
    return EvalResult(**merged)


def write_answers(path: Path, rows: Sequence[Mapping[str, Any]], result: EvalResult) -> None:
    """The evaluation's answers as JSONL, one per question with its outcomes, so they can be scored again."""
    with Path(path).open("w", encoding="utf-8") as out:
        for i, row in enumerate(rows):
            line = {
                "id": row.get("info", {}).get("id"),
                "question": row["question"],
                "gold": str(row["answer"]),
                "answer": result.texts[i] if result.texts else None,
                "correct": result.correct_flags[i],
                "formatted": result.format_flags[i],
                "worked": result.worked_flags[i] if result.worked_flags else None,
                "truncated": result.truncated_flags[i] if result.truncated_flags else None,
                "tokens": result.answer_tokens[i] if result.answer_tokens else None,
                "env_reward": result.env_rewards[i] if result.env_rewards else None,
            }
            out.write(json.dumps(line, ensure_ascii=False) + "\n")
