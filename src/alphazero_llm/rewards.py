"""Rewards, as plain functions: the one definition of HRE, PRE and the weight-0 metrics.

The same functions score vf-eval rollouts (the 0.3 rubric, `alphazero_llm.rubric`, and the v1 taskset,
`alphazero_llm.taskset`), MCTS leaves and GRPO groups. No verifiers import, so they work under any release.

- HRE (hard reward): `hre_score(completion, gold)` is 1.0 when the completion's
  committed final answer equals the gold number, else 0.0. The extraction
  rules are documented in `alphazero_llm.answers`.
- PRE (perplexity reward): how natural a solution is to the student model,
  normalised against the reference solution of the same question:

      ppl(text)  = exp(-mean log p_student(token | chat-templated question, earlier tokens))
      PRE        = clip((ppl(reference) - ppl(completion)) / ppl(reference), -1, 1)

  Only completion tokens count (the question's tokens are the condition, not
  scored). PRE > 0 when the completion is *more* natural to the student than the
  reference solution, 0 when equally natural, < 0 when less (and -1 once it is
  twice as perplexing or worse). An empty completion gets -1.

Other environments reuse them through `alphazero_llm.rubric.build_rubric()` (verifiers 0.3) or the taskset's
plugged reward functions (`alphazero_llm.taskset`, verifiers.v1).
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Sequence
from typing import Any, Protocol

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


def prompt_messages(prompt: Any) -> list[dict[str, str]]:
    """A verifiers prompt (string, dicts or message objects) as plain `{"role", "content"}` dicts."""
    if isinstance(prompt, str):
        return [{"role": "user", "content": prompt}]
    return [{"role": str(_field(m, "role")), "content": _content_text(_field(m, "content"))} for m in prompt]


def _field(message: Any, name: str) -> Any:
    return message.get(name) if isinstance(message, dict) else getattr(message, name, None)


def _content_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # OpenAI content parts
        return "".join(str(_field(part, "text") or "") for part in content if _field(part, "type") == "text")
    return ""


# --- PRE ---------------------------------------------------------------------


def perplexity(logprobs: Sequence[float]) -> float:
    """exp of the mean negative log-likelihood per token; undefined (ValueError) for no tokens."""
    if len(logprobs) == 0:
        raise ValueError("perplexity of an empty token sequence is undefined")
    return math.exp(-math.fsum(float(x) for x in logprobs) / len(logprobs))


def pre_reward(completion_ppl: float, reference_ppl: float) -> float:
    """clip((reference_ppl - completion_ppl) / reference_ppl, -1, 1): positive when more natural."""
    if not reference_ppl > 0:
        raise ValueError(f"reference perplexity must be positive, got {reference_ppl}")
    return max(-1.0, min(1.0, (reference_ppl - completion_ppl) / reference_ppl))


class LogprobModel(Protocol):
    """Anything that scores completions given prompts (the student model, or a test fake)."""

    def completion_logprobs(self, prompts: Sequence[Any], completions: Sequence[str]) -> Sequence[Sequence[float]]: ...


class TokenLogprobModel(LogprobModel, Protocol):
    """A `LogprobModel` that also scores token ids after a templated chat (`score_steps` needs it)."""

    def prompt_ids(self, prompt: Any) -> list[int]: ...

    def token_logprobs(
        self, prompt_ids: Sequence[list[int]], completion_ids: Sequence[list[int]]
    ) -> Sequence[Sequence[float]]: ...


class PerplexityReward:
    """PRE, the one implementation: for the rubric's groups of completions (`score`) and for the search's
    candidate steps (`score_steps`), with one reference-perplexity cache per (prompt, solution).

    One batched log-prob call scores every completion of a group, plus the reference
    solution the first time its question is seen. Log-probs are the model's own (temperature 1).
    """

    def __init__(self, model: LogprobModel) -> None:
        self.model = model
        self._reference_ppl: dict[str, float] = {}

    def reference_perplexity(self, chat: Sequence[Any], solution: str) -> float:
        """ppl(solution | chat), cached."""
        key = json.dumps([prompt_messages(chat), solution])
        if key not in self._reference_ppl:
            (lp,) = self.model.completion_logprobs([prompt_messages(chat)], [solution])
            self._reference_ppl[key] = perplexity(lp)
        return self._reference_ppl[key]

    def score_steps(
        self, chat: Sequence[Any], solution: str, context_ids: Sequence[int], steps: Sequence[Sequence[int]]
    ) -> list[float]:
        """PRE of each step (token ids) after `chat` and the solution so far (`context_ids`), against
        ppl(solution | chat): the rubric's PRE, applied to one step. An empty step gets -1."""
        model: TokenLogprobModel = self.model  # type: ignore[assignment]
        reference = self.reference_perplexity(chat, solution)
        prompt = [*model.prompt_ids(prompt_messages(chat)), *context_ids]
        scored = [i for i, step in enumerate(steps) if step]
        logprobs = model.token_logprobs([prompt] * len(scored), [list(steps[i]) for i in scored]) if scored else []
        rewards = [-1.0] * len(steps)
        for i, lp in zip(scored, logprobs, strict=True):
            rewards[i] = pre_reward(perplexity(lp), reference)
        return rewards

    def score(self, prompts: Sequence[Any], completions: Sequence[str], solutions: Sequence[str]) -> list[float]:
        """PRE of `completions[i]` answering `prompts[i]`, normalised by `solutions[i]`'s perplexity."""
        if not len(prompts) == len(completions) == len(solutions):
            raise ValueError("prompts, completions and solutions must have the same length")
        chats = [prompt_messages(p) for p in prompts]
        keys = [json.dumps([chat, solution]) for chat, solution in zip(chats, solutions, strict=True)]
        missing = {key: i for i, key in enumerate(keys) if key not in self._reference_ppl}
        scored = [i for i, text in enumerate(completions) if text.strip()]
        pairs = [(chats[i], solutions[i]) for i in missing.values()] + [(chats[i], completions[i]) for i in scored]
        logprobs = self.model.completion_logprobs([p for p, _ in pairs], [c for _, c in pairs]) if pairs else []
        for key, lp in zip(missing, logprobs[: len(missing)], strict=True):
            self._reference_ppl[key] = perplexity(lp)
        rewards = [-1.0] * len(completions)
        for i, lp in zip(scored, logprobs[len(missing) :], strict=True):
            rewards[i] = pre_reward(perplexity(lp), self._reference_ppl[keys[i]])
        for i, text in enumerate(completions):
            if not text.strip():
                logger.warning("PRE: completion %d is empty; it gets -1", i)
        return rewards


# --- row-level rewards and metrics: verifiers 0.3 passes only the arguments they name ---


def correctness_reward(completion: Any, answer: str) -> float:
    """HRE on the final assistant message (the rubric's main reward; the seed's metric name)."""
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
