"""The baselines beside the tree: plain GRPO (`SampleSource`) and SFT on the reference solution (`SFTSource`)."""

from __future__ import annotations

import dataclasses
import random
from pathlib import Path

import pytest
import torch
from test_loop import PROBLEMS, lora_grads, small_config, tiny_student

from alphazero_llm.config import Config, override
from alphazero_llm.mcts.evaluate import leaf_value
from alphazero_llm.mcts.reference_teacher import solution_lines
from alphazero_llm.mcts.tree import teacher_step_text
from alphazero_llm.models.policy import StudentPolicy
from alphazero_llm.models.terminal import TerminalChecker
from alphazero_llm.training.assembly import example_seed, student_policy
from alphazero_llm.training.baselines import SampleSource, SFTSource
from alphazero_llm.training.loop import Trainer


def baseline_config(source: str, **changes) -> Config:
    config = small_config(**{"run.source": source, "run.loss": "legacy" if source == "sft" else "grpo", **changes})
    return config


def policies(student, config: Config):
    return lambda step: student_policy(student, config, example_seed(config.training.seed, step))


def sample_source(loop, student, config: Config) -> SampleSource:
    training = config.training
    terminal = TerminalChecker.rules_only(config.teachers.terminal_checker)
    return SampleSource(loop, policies(student, config), terminal, training.rewards, training.sample, config.models)


def trainer_for(source_name: str, loop, tmp_path: Path, smollm_dir: Path, **changes) -> Trainer:
    config = baseline_config(source_name, **{"run.checkpoint_dir": str(tmp_path), "run.num_examples": 2, **changes})
    student = tiny_student(smollm_dir, config)
    source = SFTSource(policies(student, config)) if source_name == "sft" else sample_source(loop, student, config)
    return Trainer(student, source, PROBLEMS, config.training)


def test_sft_group_is_the_reference_path_of_the_tree(loop, tmp_path: Path, smollm_dir: Path) -> None:
    """One trajectory, the reference solution's lines tokenised one by one as the tree's reference steps are."""
    trainer = trainer_for("sft", loop, tmp_path, smollm_dir)
    problem = PROBLEMS[1]
    group = trainer.source(problem, trainer.rng, 0)
    (trajectory,) = group.trajectories
    policy = student_policy(trainer.student, small_config(), 0)
    state, expected = "", []
    for line in solution_lines(problem.solution):
        text = teacher_step_text(state, line)
        expected.append(policy.encode(text))
        state += text
    assert [s.token_ids for s in trajectory.steps] == expected
    assert trajectory.text == "1 + 1 = 2\n#### 2\n" and trajectory.terminal and trajectory.hre == 1.0
    assert trajectory.reward == 1.0 and group.temperature == 1.0
    assert group.metrics["student_tokens"] == 0 and group.metrics["teacher_tokens"] == 0


def test_sft_gradient_is_the_gradient_of_the_reference_nll(loop, tmp_path: Path, smollm_dir: Path) -> None:
    """The SFT arm's update (legacy loss, reward 1, no KL) has exactly the gradient of the token-mean negative
    log-likelihood of the reference solution and EOS after the prompt, taken here straight from the logits."""
    changes = {"legacy.kl_weight": 0.0, "optimizer.gradient_accumulation_steps": 2}  # 2: no step, .grad is kept
    trainer = trainer_for("sft", loop, tmp_path, smollm_dir, **changes)
    model = trainer.student.model
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:  # B != 0: the adapter shapes the logits, so its A matrices get gradients too
                param.copy_(torch.randn(param.shape, generator=generator) * 0.05)
    batch = trainer.batch(trainer.source(PROBLEMS[2], trainer.rng, 0))
    (completion,) = batch.completion_ids
    assert completion[-1] == trainer.eos  # a finished solution teaches stopping
    ids = torch.tensor([[*batch.prompt_ids, *completion]])
    model.train()
    logits = model(input_ids=ids).logits[0, len(batch.prompt_ids) - 1 : -1].float()
    nll = torch.nn.functional.cross_entropy(logits, torch.tensor(completion))
    (nll / 2).backward()  # the trainer divides by the 2 accumulated examples
    model.eval()
    expected = lora_grads(trainer)
    model.zero_grad(set_to_none=True)
    record = trainer.update(batch)
    assert not record["updated"] and record["loss"] == pytest.approx(float(nll.detach()), rel=1e-5)
    got = lora_grads(trainer)
    assert got.keys() == expected.keys() and any("lora_A" in n for n in got)
    for name, grad in expected.items():
        assert grad.abs().max() > 0, name
        torch.testing.assert_close(got[name], grad, rtol=1e-4, atol=1e-6, msg=name)


def test_sample_rewards_are_the_search_leaf_value(
    loop, tmp_path: Path, smollm_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each answer is a path of one student step: its reward is `leaf_value` of its PRE, HRE and format, and its
    tokens are the sampled ones, verbatim."""
    config = baseline_config("sample", **{"rewards.format_bonus": 0.2, "rewards.pre_weight": 0.5})
    student = tiny_student(smollm_dir, config)
    encode = lambda text: student.tokenizer(text, add_special_tokens=False)["input_ids"]  # noqa: E731
    scripted = [encode("1 + 1 = 2\n#### 2"), encode("#### 7"), encode("1 + 1 is")]

    async def answers(self, problem, sampling, n):  # the student's sampler, scripted; the scoring is real
        assert n == config.training.sample.group_size and sampling.stop_at_answer
        return scripted

    monkeypatch.setattr(StudentPolicy, "answers", answers)
    group = sample_source(loop, student, config)(PROBLEMS[1], random.Random(0), 0)
    assert [list(t.completion_ids) for t in group.trajectories] == scripted
    good, bad, unfinished = group.trajectories
    assert (good.hre, good.terminal, good.formatted) == (1.0, True, True)
    assert (bad.hre, bad.terminal, bad.formatted) == (0.0, True, False)
    assert (unfinished.hre, unfinished.terminal) == (0.0, False)
    for t in group.trajectories:
        assert -1.0 <= t.pre <= 1.0
        assert t.reward == pytest.approx(leaf_value([t.pre], ["student"], t.hre, config.training.rewards, t.formatted))
    assert good.reward > bad.reward
    assert group.metrics["best_correct"] == 1.0 and group.metrics["teacher_tokens"] == 0


def test_plain_grpo_trains_on_the_student_answers(loop, tmp_path: Path, smollm_dir: Path) -> None:
    """Two examples of `--source sample` on the real (tiny) student: groups of sample.group_size answers, their
    tokens counted as student and gradient tokens, one optimiser step per example."""
    trainer = trainer_for("sample", loop, tmp_path, smollm_dir, **{"sample.group_size": 3, "sample.max_new_tokens": 6})
    records = trainer.run(progress=False)
    assert [r["step"] for r in records] == [1, 2]
    for r in records:
        assert r["group_size"] == 3 and r["updated"]
        assert 0 < r["student_tokens"] <= 3 * 6 and r["teacher_tokens"] == 0
        # Terminal answers get an EOS in the loss; the tokens trained on are the sampled ones plus those.
        assert r["student_tokens"] <= r["grad_tokens"] <= r["student_tokens"] + 3


def test_sample_config_is_validated() -> None:
    with pytest.raises(ValueError, match="group_size must be >= 2"):
        override(small_config().training, {"sample.group_size": 1})
    assert dataclasses.replace(small_config().training.sample, group_size=2).group_size == 2
