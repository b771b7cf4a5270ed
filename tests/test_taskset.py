"""The verifiers.v1 taskset: the 0.3 environment's rows, arguments and rewards, and its rewards reused by another
taskset. Runs on the installed verifiers (0.3.1 ships v1; CI's second venv checks 0.4 end to end)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pydantic
import pytest
import verifiers.v1 as vf

from alphazero_llm.config import load_config
from alphazero_llm.environment import EnvArgs, resolve_environment
from alphazero_llm.rewards import hre_score
from alphazero_llm.taskset import AlphazeroTaskset, AlphazeroTasksetConfig, Gsm8kTask
from alphazero_llm_trainer import AlphazeroTaskset as Exported

MINI = str(Path(__file__).resolve().parent / "fixtures" / "gsm8k_mini")


def taskset(**args) -> AlphazeroTaskset:
    return AlphazeroTaskset(AlphazeroTasksetConfig(id="alphazero-llm-trainer", dataset_path=MINI, **args))


def trace_of(task: vf.Task, reply: str) -> vf.Trace:
    """A finished single-turn trace: the task's prompt, then `reply` as the model's sampled message."""
    data = task.data.model_dump(mode="json")
    system = [{"message": {"role": "system", "content": task.data.system_prompt}}] if task.data.system_prompt else []
    nodes = [
        *system,
        {"message": {"role": "user", "content": task.data.prompt}},
        {"message": {"role": "assistant", "content": reply}, "sampled": True},
    ]
    return vf.Trace.model_validate(
        {"task": {"type": type(task).__name__, "data": data}, "agent": {"config": {}}, "nodes": nodes}
    )


def scored(task: vf.Task, reply: str) -> vf.Trace:
    trace = trace_of(task, reply)
    asyncio.run(task.score(trace))
    return trace


def test_the_module_exports_the_taskset_verifiers_loads_by_name():
    assert Exported is AlphazeroTaskset
    loaded = vf.load_taskset(AlphazeroTasksetConfig(id="alphazero-llm-trainer", dataset_path=MINI, num_dev_examples=2))
    assert type(loaded) is AlphazeroTaskset


def test_same_rows_and_prompt_as_the_classic_environment():
    """Both faces build from the one resolution (environment.resolve_environment)."""
    spec = resolve_environment(EnvArgs(dataset_path=MINI, num_dev_examples=2), load_config())
    for split in ("train", "dev", "test"):
        tasks = list(taskset(num_dev_examples=2, split=split))
        assert [(t.data.question, t.data.answer) for t in tasks] == [
            (r["question"], r["answer"]) for r in spec.rows(split)
        ]
    first = next(iter(taskset(num_dev_examples=2))).data
    assert first.system_prompt == load_config().training.environment.system_prompt == spec.system_prompt
    assert first.prompt == first.question == spec.test[0]["question"]
    assert first.solution == spec.test[0]["info"]["solution"]


def test_default_split_is_the_first_twenty_test_questions(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("GSM8K_PATH", MINI)
    tasks = list(AlphazeroTaskset(AlphazeroTasksetConfig(id="alphazero-llm-trainer", num_dev_examples=2)))
    assert len(tasks) == 6  # the fixture's whole test split: fewer than the configured 20
    assert tasks[0].data.answer == "91"
    assert len(list(taskset(num_dev_examples=2, num_eval_examples=2))) == 2


def test_rewards_weights_and_metrics():
    (task, *_) = taskset(num_dev_examples=2)
    right = scored(task, "7 rows of 13 trees: 7 * 13 = 91.\n#### 91")
    assert {name: (r.score, r.weight) for name, r in right.rewards.items()} == {"correctness_reward": (1.0, 0.4)}
    assert right.reward == pytest.approx(0.4)
    assert right.metrics == {"strict_correctness": 1.0, "format_ok": 1.0, "answer_parsed": 1.0}

    chatty = scored(task, "He has **91 trees**.")
    assert chatty.rewards["correctness_reward"].score == hre_score("He has **91 trees**.", "91") == 1.0
    assert chatty.metrics == {"strict_correctness": 0.0, "format_ok": 0.0, "answer_parsed": 1.0}
    wrong = scored(task, "7 * 13 = 81\n#### 81")
    assert wrong.reward == 0.0
    assert wrong.metrics["format_ok"] == 1.0
    assert scored(task, "I cannot tell.").metrics["answer_parsed"] == 0.0


def test_weights_are_arguments_and_an_explicit_zero_stays_zero():
    (task, *_) = taskset(num_dev_examples=2, hre_weight=0.0)
    trace = scored(task, "#### 91")
    assert trace.rewards["correctness_reward"].weight == 0.0
    assert trace.reward == 0.0
    # verifiers' own per-reward flag wins over the argument.
    config = AlphazeroTasksetConfig(
        id="alphazero-llm-trainer",
        dataset_path=MINI,
        num_dev_examples=2,
        task={"rewards": {"correctness_reward": {"weight": 2.0}}},
    )
    (task, *_) = AlphazeroTaskset(config)
    assert scored(task, "#### 91").reward == 2.0


def test_pre_is_absent_without_a_student():
    (task, *_) = taskset(num_dev_examples=2)
    assert [fn.__name__ for fn in task.hooks("reward")] == ["correctness_reward"]
    assert [fn.__name__ for fn in task.hooks("metric")] == ["answer_parsed", "format_ok", "strict_correctness"]


def test_bad_arguments_name_the_culprit():
    with pytest.raises(pydantic.ValidationError, match="num_examples"):
        AlphazeroTasksetConfig(id="alphazero-llm-trainer", num_examples=5)
    with pytest.raises(pydantic.ValidationError, match="split"):
        AlphazeroTasksetConfig(id="alphazero-llm-trainer", split="validation")
    with pytest.raises(ValueError, match="use_student_model is false"):
        taskset(num_dev_examples=2, student_model="some/model")
    with pytest.raises(ValueError, match="unknown teacher tier 'platinum'"):
        taskset(num_dev_examples=2, tier="platinum")


# --- another taskset reusing our rewards -----------------------------------------------------------------------


class ArithmeticData(vf.TaskData):
    answer: str


class ArithmeticTask(vf.Task[ArithmeticData]):
    pass


class ArithmeticTaskset(vf.Taskset[ArithmeticTask]):
    """A second, small taskset (not GSM8K) that grades with our functions, plugged by name."""

    ROWS = (("What is 17 * 3?", "51"), ("Write one half as a decimal.", "0.5"))

    def load(self) -> list[ArithmeticTask]:
        return [ArithmeticTask(ArithmeticData(prompt=q, answer=a), self.config.task) for q, a in self.ROWS]


def reusing_config() -> vf.TasksetConfig:
    ours = "alphazero_llm.taskset:"
    return vf.TasksetConfig(
        id="arithmetic",
        task=vf.TaskConfig(
            rewards={"correctness_reward": vf.RewardFunctionConfig(fn=ours + "correctness_reward", weight=1.0)},
            metrics={name: vf.DecoratedFunctionConfig(fn=ours + name) for name in ("format_ok", "answer_parsed")},
        ),
    )


def test_another_taskset_reuses_the_rewards():
    multiply, half = ArithmeticTaskset(reusing_config())
    right = scored(multiply, "17 * 3 = 51, so \\boxed{51}")
    assert right.reward == 1.0
    assert right.metrics == {"format_ok": 0.0, "answer_parsed": 1.0}
    assert scored(half, "The answer is $\\frac{1}{2}$.").reward == 1.0
    wrong = scored(multiply, "17 * 3 = 41\n#### 41")
    assert wrong.reward == 0.0
    assert wrong.metrics["format_ok"] == 1.0
    assert scored(multiply, "I am not sure.").metrics["answer_parsed"] == 0.0


def test_our_task_class_is_the_taskset_task_type():
    """A served task is rebuilt as `task_type()(data, config.task)`: that rebuild keeps the weights."""
    ts = taskset(num_dev_examples=2, hre_weight=0.7)
    assert AlphazeroTaskset.task_type() is Gsm8kTask
    (task, *_) = ts
    rebuilt = Gsm8kTask(task.data, ts.config.task)
    assert scored(rebuilt, "#### 91").reward == pytest.approx(0.7)
