"""load_environment(): wiring, argument validation, and the public rubric reused by another environment."""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path

import pytest
import verifiers as vf
from datasets import Dataset

from alphazero_llm.config import load_config
from alphazero_llm.environment import shared_perplexity_reward
from alphazero_llm.models.prompts import question_messages
from alphazero_llm.models.student import StudentModel
from alphazero_llm.rubric import build_rubric
from alphazero_llm_trainer import load_environment

MINI = str(Path(__file__).resolve().parent / "fixtures" / "gsm8k_mini")


def rubric_table(env: vf.Environment) -> dict[str, float]:
    """Our rubric's functions and weights (verifiers groups it with its own num_turns monitor)."""
    ours = env.rubric.rubrics[0]
    return {f.__name__: w for f, w in zip(ours.funcs, ours.weights, strict=True)}


def test_defaults_come_from_config():
    env = load_environment(dataset_path=MINI, num_dev_examples=2)
    cfg = load_config().training
    assert isinstance(env, vf.SingleTurnEnv)
    assert env.system_prompt == cfg.environment.system_prompt
    assert "#### " in env.system_prompt
    assert rubric_table(env) == {
        "correctness_reward": cfg.environment.hre_weight,
        "strict_correctness": 0.0,
        "format_ok": 0.0,
        "answer_parsed": 0.0,
    }
    assert len(env.dataset) == 6  # the fixture's 8 train rows less the 2 held out as dev
    assert len(env.eval_dataset) == 6  # the whole eval split: fewer than the configured 20
    for row in (env.dataset[0], env.eval_dataset[0]):  # the one chat prompt, its system message not repeated
        assert row["prompt"] == question_messages(row["question"], cfg.environment.system_prompt)
    assert env.parser.parse("so #### 1,000") == "1,000"


def test_rows_are_formatted_with_the_system_prompt():
    env = load_environment(
        dataset_path=MINI, num_dev_examples=2, num_eval_examples=2, system_prompt="Answer with #### N."
    )
    row = env.eval_dataset[0]
    assert row["answer"] == "91"
    assert row["prompt"][0] == {"role": "system", "content": "Answer with #### N."}
    assert row["prompt"][-1]["role"] == "user"
    assert row["prompt"][-1]["content"].startswith("A farmer has 7 rows")
    assert row["info"]["solution"].endswith("#### 91")
    assert len(env.eval_dataset) == 2


def test_overrides_and_an_explicit_zero_weight():
    env = load_environment(dataset_path=MINI, num_dev_examples=2, hre_weight=0.0, num_train_examples=3, seed=7)
    assert rubric_table(env)["correctness_reward"] == 0.0
    assert len(env.dataset) == 3
    other_seed = load_environment(dataset_path=MINI, num_dev_examples=2, num_train_examples=3, seed=8)
    assert env.dataset["question"] != other_seed.dataset["question"]


def test_gsm8k_path_environment_variable(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("GSM8K_PATH", MINI)
    assert load_environment(num_dev_examples=2).eval_dataset[0]["answer"] == "91"


def test_unknown_argument_lists_the_valid_ones():
    with pytest.raises(ValueError, match=r"unknown key\(s\) \['num_examples'\]; valid keys: \[.*'hre_weight'"):
        load_environment(num_examples=5)


def test_wrong_argument_type():
    with pytest.raises(ValueError, match="num_train_examples: expected an integer"):
        load_environment(dataset_path=MINI, num_dev_examples=2, num_train_examples="5")


def test_unknown_tier():
    with pytest.raises(ValueError, match="unknown teacher tier 'platinum'"):
        load_environment(dataset_path=MINI, num_dev_examples=2, tier="platinum")


def test_student_model_needs_use_student_model():
    with pytest.raises(ValueError, match="use_student_model is false"):
        load_environment(dataset_path=MINI, num_dev_examples=2, student_model="some/model")


@pytest.mark.slow
def test_use_student_model_adds_perplexity_once_per_process(smollm_dir: Path, monkeypatch: pytest.MonkeyPatch):
    loads = []
    real_load = StudentModel.load.__func__

    def counting_load(cls, spec, config):
        loads.append(spec)
        return real_load(cls, spec, config)

    monkeypatch.setattr(StudentModel, "load", classmethod(counting_load))
    shared_perplexity_reward.cache_clear()
    env = load_environment(dataset_path=MINI, num_dev_examples=2, use_student_model=True, student_model=str(smollm_dir))
    assert rubric_table(env) == {
        "correctness_reward": 0.4,
        "perplexity_reward": 0.6,
        "strict_correctness": 0.0,
        "format_ok": 0.0,
        "answer_parsed": 0.0,
    }
    again = load_environment(
        dataset_path=MINI, num_dev_examples=2, use_student_model=True, student_model=str(smollm_dir), pre_weight=0.3
    )
    assert rubric_table(again)["perplexity_reward"] == 0.3
    assert len(loads) == 1  # two environments, one student per process
    assert loads[0].name == str(smollm_dir) and loads[0].lora is False
    shared_perplexity_reward.cache_clear()


def score(rubric: vf.Rubric, text: str, answer: str) -> vf.State:
    state = vf.State(
        prompt=[{"role": "user", "content": "?"}],
        completion=[{"role": "assistant", "content": text}],
        answer=answer,
        info={},
    )
    asyncio.run(rubric.score_rollout(state))
    return state


def test_another_environment_can_reuse_the_rubric():
    """A second, small environment (not GSM8K) builds its rubric from ours and scores with it."""
    questions = Dataset.from_list(
        [
            {"question": "What is 17 * 3?", "answer": "51"},
            {"question": "Write one half as a decimal.", "answer": "0.5"},
        ]
    )
    rubric = build_rubric(hre_weight=1.0)
    arithmetic = vf.SingleTurnEnv(
        dataset=questions,
        eval_dataset=questions,
        system_prompt="Reply with the number only, as \\boxed{N}.",
        parser=rubric.parser,
        rubric=rubric,
    )
    assert arithmetic.rubric.rubrics[0] is rubric
    right = score(rubric, "17 * 3 = 51, so \\boxed{51}", "51")
    assert right["reward"] == 1.0
    assert right["metrics"] == {
        "correctness_reward": 1.0,
        "strict_correctness": 0.0,
        "format_ok": 0.0,
        "answer_parsed": 1.0,
    }
    assert score(rubric, "The answer is $\\frac{1}{2}$.", "0.5")["reward"] == 1.0
    wrong = score(rubric, "17 * 3 = 41\n#### 41", "51")
    assert wrong["reward"] == 0.0
    assert wrong["metrics"]["format_ok"] == 1.0
    unparsed = score(rubric, "I am not sure.", "51")
    assert unparsed["metrics"]["answer_parsed"] == 0.0


def test_rubric_rejects_negative_weights():
    with pytest.raises(ValueError, match="must be >= 0"):
        build_rubric(hre_weight=-1.0)


def test_svamp_is_a_dataset_of_the_environment(svamp_file: Path):
    """`dataset="svamp"`: training rows from SVAMP's train split, evaluation rows the first of its test split."""
    from alphazero_llm.data import dataset_splits

    env = load_environment(dataset="svamp", dataset_path=str(svamp_file), num_eval_examples=5, num_train_examples=-1)
    config = load_config().training.dataset
    splits = dataset_splits(dataclasses.replace(config, kind="svamp", path=str(svamp_file), num_train_examples=-1), 42)
    assert [r["id"] for r in env.eval_dataset["info"]] == [r["info"]["id"] for r in splits.test[:5]]
    assert len(env.dataset) == len(splits.train) == 599
    assert not {r["id"] for r in env.dataset["info"]} & {r["info"]["id"] for r in splits.dev + splits.test}
    assert env.eval_dataset[0]["prompt"][-1]["content"] == splits.test[0]["question"]
    with pytest.raises(ValueError, match=r"dataset\.kind must be gsm8k or svamp"):
        load_environment(dataset="mathqa", dataset_path=str(svamp_file))
