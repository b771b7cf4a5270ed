"""Rewards, as plain functions, and the verifiers rubric built from them.

The same functions score vf-eval rollouts, MCTS leaves and GRPO groups.

- HRE (hard reward): `hre_score(completion, gold)` is 1.0 when the completion's
  committed final answer equals the gold number, else 0.0. The extraction
  rules are documented in `alphazero_llm.answers`.
- PRE (perplexity reward) needs a student model; it arrives with the student
  (`use_student_model=True`) and is not built yet.

`build_rubric()` is public so that other environments can reuse our grading:

    from alphazero_llm.rewards import build_rubric
    rubric = build_rubric(hre_weight=1.0)
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import verifiers as vf

from alphazero_llm.answers import answers_match, extract_answer, extract_strict

logger = logging.getLogger(__name__)


def hre_score(completion: str, gold: str) -> float:
    """Hard reward: 1.0 if the committed final answer of `completion` equals `gold`, else 0.0.

    Raises ValueError when `gold` itself is not a number (a data bug, never scored 0).
    """
    return 1.0 if answers_match(extract_answer(completion), gold) else 0.0


def strict_score(completion: str, gold: str) -> float:
    """lm-eval's strict-match: only a `#### N` answer counts."""
    return 1.0 if answers_match(extract_strict(completion), gold) else 0.0


def completion_text(completion: Any) -> str:
    """The text of a completion: a string as is, or the last assistant message of a chat."""
    if isinstance(completion, str):
        return completion
    for message in reversed(list(completion)):
        if _field(message, "role") == "assistant":
            return _content_text(_field(message, "content"))
    return ""


def _field(message: Any, name: str) -> Any:
    return message.get(name) if isinstance(message, dict) else getattr(message, name, None)


def _content_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # OpenAI content parts
        return "".join(str(_field(part, "text") or "") for part in content if _field(part, "type") == "text")
    return ""


# --- rubric functions: verifiers passes only the arguments they name --------


def correctness(completion: Any, answer: str) -> float:
    """HRE on the final assistant message (the rubric's main reward)."""
    return hre_score(completion_text(completion), answer)


def strict_correctness(completion: Any, answer: str) -> float:
    """Metric: correct *and* in the `#### N` format (lm-eval strict-match)."""
    return strict_score(completion_text(completion), answer)


def format_ok(completion: Any) -> float:
    """Metric: the completion ends its reasoning with a parseable `#### N` line."""
    return 0.0 if extract_strict(completion_text(completion)) is None else 1.0


def answer_parsed(completion: Any) -> float:
    """Metric: the flexible extractor found a committed answer (0 means unparseable, not wrong)."""
    return 0.0 if extract_answer(completion_text(completion)) is None else 1.0


class Gsm8kParser(vf.Parser):
    """A verifiers parser whose `parse` returns the committed final answer (or None)."""

    def __init__(self) -> None:
        super().__init__(extract_fn=extract_answer)


def build_rubric(
    hre_weight: float = 0.4,
    pre_weight: float = 0.6,
    use_student_model: bool = False,
    parser: vf.Parser | None = None,
) -> vf.Rubric:
    """The GSM8K rubric: `correctness` (HRE) at `hre_weight`, `perplexity` (PRE) at `pre_weight`
    when a student model is used, and weight-0 metrics `strict_correctness`, `format_ok`,
    `answer_parsed`.

    The weights are taken as given (an explicit 0.0 stays 0.0); the reward is their weighted sum.
    """
    if hre_weight < 0 or pre_weight < 0:
        raise ValueError(f"reward weights must be >= 0, got hre={hre_weight}, pre={pre_weight}")
    funcs: list[Callable[..., float]] = [correctness]
    weights = [hre_weight]
    if use_student_model:
        raise NotImplementedError(
            "use_student_model=True needs the student model and the perplexity reward (PRE), "
            "which are not implemented yet; run with use_student_model=False (HRE only)."
        )
    for metric in (strict_correctness, format_ok, answer_parsed):
        funcs.append(metric)
        weights.append(0.0)
    return vf.Rubric(funcs=funcs, weights=weights, parser=parser or Gsm8kParser())
