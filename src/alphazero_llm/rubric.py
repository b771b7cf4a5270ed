"""The verifiers 0.3 face: `load_environment()` (a `SingleTurnEnv`) and `build_rubric()`, from `rewards.py`.

0.3 is the last release with this classic API; on 0.4 the taskset (`alphazero_llm.taskset`) serves instead.
`build_rubric()` is public so that other 0.3 environments can reuse our grading:

    from alphazero_llm.rubric import build_rubric
    rubric = build_rubric(hre_weight=1.0)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import verifiers as vf
from datasets import Dataset

from alphazero_llm.answers import extract_answer
from alphazero_llm.config import load_config
from alphazero_llm.environment import EnvArgs, EnvSpec, Row, resolve_environment
from alphazero_llm.models.prompts import question_messages
from alphazero_llm.rewards import (
    PerplexityReward,
    answer_parsed,
    completion_text,
    correctness_reward,
    format_ok,
    strict_correctness,
)

if not hasattr(vf, "SingleTurnEnv"):
    raise ImportError(
        f"alphazero_llm.rubric needs verifiers 0.3's classic API (SingleTurnEnv, Rubric); verifiers "
        f"{vf.__version__} has only verifiers.v1: use the taskset, alphazero_llm.taskset.AlphazeroTaskset"
    )


def gsm8k_parser() -> vf.Parser:
    """A verifiers parser whose `parse` returns the committed final answer (or None)."""
    return vf.Parser(extract_fn=extract_answer)


def perplexity_metric(pre: PerplexityReward) -> Callable[..., list[float]]:
    """The rubric's `perplexity_reward` function (the seed's metric name): a group function, so one question's
    rollouts are batched."""

    def score_group(prompts: list[Any], completions: list[Any], infos: list[dict]) -> list[float]:
        texts = [completion_text(c) for c in completions]
        return pre.score(prompts, texts, [info["solution"] for info in infos])

    score_group.__name__ = "perplexity_reward"  # verifiers names the metric after the function
    return score_group


def build_rubric(
    hre_weight: float = 0.4,
    pre_weight: float = 0.6,
    pre: PerplexityReward | None = None,
    parser: vf.Parser | None = None,
) -> vf.Rubric:
    """The GSM8K rubric: `correctness_reward` (HRE) at `hre_weight`, `perplexity_reward` (PRE) at `pre_weight`
    when a `PerplexityReward` is given, and weight-0 metrics `strict_correctness`, `format_ok`,
    `answer_parsed`.

    The weights are taken as given (an explicit 0.0 stays 0.0); the reward is their weighted sum.
    PRE reads the reference solution from each row's `info["solution"]`. It is a group function,
    so verifiers' `--independent-scoring` cannot be used with it.
    """
    if hre_weight < 0 or pre_weight < 0:
        raise ValueError(f"reward weights must be >= 0, got hre={hre_weight}, pre={pre_weight}")
    funcs: list[Callable[..., Any]] = [correctness_reward]
    weights = [hre_weight]
    if pre is not None:
        funcs.append(perplexity_metric(pre))
        weights.append(pre_weight)
    for metric in (strict_correctness, format_ok, answer_parsed):
        funcs.append(metric)
        weights.append(0.0)
    return vf.Rubric(funcs=funcs, weights=weights, parser=parser or gsm8k_parser())


def build_environment(spec: EnvSpec) -> vf.SingleTurnEnv:
    """Wire the resolved rows, prompt and rubric into a SingleTurnEnv."""

    def prompted(rows: list[Row]) -> Dataset:  # the student's one chat prompt (prompts.question_messages)
        return Dataset.from_list([{**r, "prompt": question_messages(r["question"], spec.system_prompt)} for r in rows])

    parser = gsm8k_parser()
    return vf.SingleTurnEnv(
        dataset=prompted(spec.train),
        eval_dataset=prompted(spec.test),
        # Informative only: every prompt already opens with it (verifiers adds none to a prompt that has one).
        system_prompt=spec.system_prompt or None,
        parser=parser,
        rubric=build_rubric(spec.hre_weight, spec.pre_weight, spec.pre, parser),
    )


def load_environment(**env_args) -> vf.SingleTurnEnv:
    """Entry point used by verifiers 0.3 (`vf-eval alphazero-llm-trainer -a '{...}'`)."""
    return build_environment(resolve_environment(EnvArgs.parse(env_args), load_config()))
