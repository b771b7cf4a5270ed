"""The verifiers.v1 face: the `alphazero-llm-trainer` taskset, for verifiers 0.4 (and 0.3.1, which ships v1).

The same rows, arguments and rewards as the 0.3 environment (`alphazero_llm.rubric`), from the same resolution
(`environment.resolve_environment`) and the same functions (`rewards.py`):

- `correctness_reward` (HRE), weight `hre_weight` (0.4);
- `perplexity_reward` (PRE), weight `pre_weight` (0.6), only with `use_student_model`;
- metrics (weight 0, so `@vf.metric`): `strict_correctness`, `format_ok`, `answer_parsed`.

Arguments are `--env.taskset.<name>` flags. The weights become the task config's reward entries
(`--env.taskset.task.rewards.<name>.weight`), where verifiers reads them, so a served task, rebuilt from its data
and the task config, keeps them.

Other v1 tasksets reuse the rewards by plugging the module-level functions below into their task config; they
need a task data field `answer` (the gold number), as verifiers' own gsm8k taskset has:

    vf.TaskConfig(rewards={"correctness_reward": vf.RewardFunctionConfig(
        fn="alphazero_llm.taskset:correctness_reward", weight=1.0)})

What 0.4's reward API does not give PRE, and how we work around it: a reward sees one trace, never the group of
a question's rollouts, so PRE scores each completion alone (0.3's group function batched them); and the student
is no argument a reward can ask for, so it is one per process (`environment.shared_perplexity_reward`), looked up
by the task config's `student_model`. Its forward pass runs in a worker thread, one call at a time, so scoring
does not block the rollouts still in flight.
"""

from __future__ import annotations

import asyncio
import functools
import threading
from collections.abc import Callable
from typing import Any, Literal

import verifiers.v1 as vf

from alphazero_llm import rewards
from alphazero_llm.config import load_config
from alphazero_llm.environment import EnvArgs, EnvSpec, Row, resolve_environment, shared_perplexity_reward
from alphazero_llm.models.prompts import question_messages
from alphazero_llm.rewards import PerplexityReward


class Gsm8kData(vf.TaskData):
    """One question: the prompt (system + user), its gold number and reference solution."""

    question: str
    answer: str
    """The gold final answer, a number as a string."""
    solution: str
    """The reference solution: PRE's normaliser."""


def reply_text(trace: vf.Trace) -> str:
    """The model's final reply, as the rewards read it (the last assistant message, unstripped)."""
    replies = trace.assistant_messages
    return (replies[-1].content or "") if replies else ""


# --- rewards and metrics, pluggable into any v1 task whose data has `answer` ---------------------------------


async def correctness_reward(task: vf.TaskData, trace: vf.Trace) -> float:
    """HRE: 1.0 when the reply's committed final answer equals `task.answer` (`rewards.correctness_reward`)."""
    return rewards.correctness_reward(reply_text(trace), task.answer)


async def strict_correctness(task: vf.TaskData, trace: vf.Trace) -> float:
    """Correct *and* written as `#### N` (lm-eval strict-match)."""
    return rewards.strict_correctness(reply_text(trace), task.answer)


async def format_ok(trace: vf.Trace) -> float:
    """The reply has a parseable `#### N` line."""
    return rewards.format_ok(reply_text(trace))


async def answer_parsed(trace: vf.Trace) -> float:
    """A committed answer was found at all (0 means unparseable, not wrong)."""
    return rewards.answer_parsed(reply_text(trace))


# --- the task ----------------------------------------------------------------------------------------------


class Gsm8kTaskConfig(vf.TaskConfig):
    """Scoring knobs (`--env.taskset.task.*`); the taskset fills them from its arguments."""

    use_student_model: bool = False
    """Score PRE with the student model."""
    student_model: str | None = None
    """The student (`embedded`, a hub id, a directory or a .gguf file); None: models.yaml's default."""


_PRE_LOCK = threading.Lock()  # one forward pass at a time: the student and PRE's cache are not thread-safe


@functools.cache
def _student_pre(student_model: str | None) -> PerplexityReward:
    return shared_perplexity_reward(student_model, load_config().models)


def _locked(score: Callable[[], float]) -> float:
    with _PRE_LOCK:
        return score()


class Gsm8kTask(vf.Task[Gsm8kData, vf.State, Gsm8kTaskConfig]):
    """A GSM8K (or SVAMP) question, scored by HRE (+ PRE) and the weight-0 metrics."""

    @vf.reward
    async def correctness_reward(self, task: Gsm8kData, trace: vf.Trace) -> float:
        return await correctness_reward(task, trace)

    @vf.reward
    async def perplexity_reward(self, task: Gsm8kData, trace: vf.Trace) -> float:
        """PRE of the reply given the prompt the model saw, against the reference solution (`rewards.PRE`)."""
        pre = _student_pre(self.config.student_model)
        prompt = question_messages(task.question, task.system_prompt)
        (value,) = await asyncio.to_thread(_locked, lambda: pre.score([prompt], [reply_text(trace)], [task.solution]))
        return value

    @vf.metric
    async def strict_correctness(self, task: Gsm8kData, trace: vf.Trace) -> float:
        return await strict_correctness(task, trace)

    @vf.metric
    async def format_ok(self, trace: vf.Trace) -> float:
        return await format_ok(trace)

    @vf.metric
    async def answer_parsed(self, trace: vf.Trace) -> float:
        return await answer_parsed(trace)

    def hooks(self, attr: str) -> list[Callable[..., Any]]:
        """verifiers' hooks, less PRE unless a student model is asked for (a decorated reward cannot be switched
        off by config, and a served task is rebuilt from its config alone)."""
        hooks = super().hooks(attr)
        if attr == "reward" and not self.config.use_student_model:
            hooks = [fn for fn in hooks if fn.__name__ != "perplexity_reward"]
        return hooks


# --- the taskset -------------------------------------------------------------------------------------------


class AlphazeroTasksetConfig(vf.TasksetConfig):
    """`--env.taskset.*`: the 0.3 environment's arguments (`environment.EnvArgs`; None takes config/'s default),
    and which split to serve. The system prompt is training.yaml's; verifiers' own `--env.taskset.system-prompt
    FILE` replaces it."""

    split: Literal["train", "dev", "test"] = "test"
    """`test`: the first `num_eval_examples` test questions, in file order (vf-eval's `-n` then picks how many)."""
    dataset: str | None = None
    dataset_path: str | None = None
    num_train_examples: int | None = None
    num_eval_examples: int | None = None
    num_dev_examples: int | None = None
    seed: int | None = None
    use_student_model: bool = False
    student_model: str | None = None
    hre_weight: float | None = None
    pre_weight: float | None = None
    tier: str | None = None
    task: Gsm8kTaskConfig = Gsm8kTaskConfig()


class AlphazeroTaskset(vf.Taskset[Gsm8kTask, AlphazeroTasksetConfig]):
    """GSM8K (or SVAMP) for verifiers.v1: `vf-eval alphazero-llm-trainer` on 0.4."""

    def __init__(self, config: AlphazeroTasksetConfig) -> None:
        super().__init__(config)
        # Every EnvArgs field but `system_prompt`, which verifiers' base config owns (a file that replaces ours).
        args = {name: getattr(config, name) for name in EnvArgs.__dataclass_fields__ if name != "system_prompt"}
        self.spec: EnvSpec = resolve_environment(EnvArgs.parse(args), load_config())
        weights = {"correctness_reward": self.spec.hre_weight, "perplexity_reward": self.spec.pre_weight}
        task = config.task
        # The user's own `--env.taskset.task.rewards.*` entries win over the arguments' weights.
        plugged = {name: vf.RewardFunctionConfig(weight=weight) for name, weight in weights.items()}
        config.task = task.model_copy(
            update={
                "use_student_model": config.use_student_model,
                "student_model": config.student_model,
                "rewards": {**plugged, **task.rewards},
            }
        )

    def load(self) -> list[Gsm8kTask]:
        return [self._task(row) for row in self.spec.rows(self.config.split)]

    def _task(self, row: Row) -> Gsm8kTask:
        info = row["info"]
        data = Gsm8kData(
            id=str(info["id"]),
            prompt=row["question"],
            system_prompt=self.spec.system_prompt or None,
            question=row["question"],
            answer=row["answer"],
            solution=info["solution"],
        )
        return Gsm8kTask(data, self.config.task)
