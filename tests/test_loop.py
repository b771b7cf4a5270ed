"""The training loop on scripted proposers and a tiny real StudentModel (random Llama + LoRA, SmolLM2 tokenizer)."""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import json
import math
import random
import re
from pathlib import Path

import pytest
import torch
from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

from alphazero_llm.config import Config, load_config
from alphazero_llm.mcts import ConstantStepScorer, Evaluator, ProposedStep, Proposers, search
from alphazero_llm.models.student import StudentModel
from alphazero_llm.models.terminal import TerminalChecker
from alphazero_llm.training.grpo import group_advantages, grpo_loss
from alphazero_llm.training.loop import LoopSettings, Trainer, pad
from alphazero_llm.training.metrics import summary_table, write_plots
from alphazero_llm.training.optim import lr_factor
from alphazero_llm.training.sampler import QuestionSampler

ROWS = [{"question": f"What is {i} + 1?", "answer": str(i + 1)} for i in range(3)]


class ScriptedTeacher:
    """Right: the correct `#### n`; wrong: a filler step and a wrong answer. Deterministic."""

    name = "teachers"

    def __init__(self) -> None:
        self.tokens = 0

    async def propose(self, question: str, partial: str, direction: str, n: int) -> list[ProposedStep]:
        gold = int(re.search(r"(\d+) \+ 1", question).group(1)) + 1
        texts = [f"{gold - 1} plus one.\n#### {gold}"] if direction == "right" else ["Let me think.", "#### 0"]
        self.tokens += 5
        return [ProposedStep(t, "scripted", ("scripted",)) for t in texts[:n]]

    def tokens_used(self) -> int:
        return self.tokens


def small_config() -> Config:
    config = load_config()
    t = config.training
    training = dataclasses.replace(
        t,
        mcts=dataclasses.replace(t.mcts, num_iterations=4, num_right=1, num_wrong=2, num_student=0, max_depth=3),
        optimizer=dataclasses.replace(t.optimizer, learning_rate=1e-2, warmup_steps=1, micro_batch_size=2),
    )
    return dataclasses.replace(config, training=training)


def search_fn(config: Config):
    evaluator = Evaluator(TerminalChecker.rules_only(config.teachers.terminal_checker), ConstantStepScorer(0.0))

    def run(question: str, gold: str, rng: random.Random, step: int):
        proposers = Proposers(teacher=ScriptedTeacher())
        return asyncio.run(
            search(question, gold, proposers, evaluator, config.training.mcts, config.training.rewards, rng)
        )

    return run


def tiny_student(smollm_dir: Path, config: Config) -> StudentModel:
    """A real StudentModel: a 2-layer random Llama (SmolLM2's tokenizer and chat template) with LoRA."""
    from peft import LoraConfig, get_peft_model

    tokenizer = AutoTokenizer.from_pretrained(smollm_dir)
    torch.manual_seed(0)
    llama = LlamaForCausalLM(
        LlamaConfig(
            vocab_size=len(tokenizer), hidden_size=16, intermediate_size=32, num_hidden_layers=2,
            num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=512, tie_word_embeddings=True,
        )
    )  # fmt: skip
    lora = LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM")
    model = get_peft_model(llama, lora)
    model.eval()
    return StudentModel(model, tokenizer)


def settings(tmp_path: Path, num_examples: int, **changes) -> LoopSettings:
    base = dict(
        num_examples=num_examples, checkpoint_dir=tmp_path, save_every=2, log_interval=1, loss="grpo", seed=3,
        system_prompt="Solve it.", keep_last=None,
    )  # fmt: skip
    return LoopSettings(**{**base, **changes})


def make_trainer(tmp_path: Path, smollm_dir: Path, num_examples: int, config: Config | None = None, **changes):
    config = config or small_config()
    student = tiny_student(smollm_dir, config)
    return Trainer(student, search_fn(config), ROWS, config.training, settings(tmp_path, num_examples, **changes))


def adapter_weights(trainer: Trainer) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in trainer.student.model.named_parameters() if "lora_" in n}


# --- pure parts -------------------------------------------------------------------------------------


def test_sampler_without_replacement_and_cycling() -> None:
    sampler = QuestionSampler(size=4, seed=1)
    drawn = [sampler.next() for _ in range(12)]
    for epoch in range(3):
        assert sorted(drawn[4 * epoch : 4 * epoch + 4]) == [0, 1, 2, 3]
    assert drawn[:4] != drawn[4:8] or drawn[4:8] != drawn[8:]  # reshuffled per epoch
    resumed = QuestionSampler(size=4, seed=1)
    for _ in range(5):
        resumed.next()
    again = QuestionSampler(size=4, seed=1, state=resumed.state)
    assert [again.next() for _ in range(7)] == drawn[5:]


def test_lr_schedule_warmup_then_cosine() -> None:
    factors = [lr_factor(s, warmup_steps=2, total_steps=10) for s in range(11)]
    assert factors[:2] == [0.5, 1.0]
    assert factors[2] == pytest.approx(1.0)
    assert all(a >= b for a, b in itertools.pairwise(factors[1:]))
    assert factors[10] == pytest.approx(0.0, abs=1e-12)


def test_pad_keeps_grad_and_masks() -> None:
    a = torch.tensor([1.0, 2.0], requires_grad=True)
    values, mask = pad([a, torch.tensor([3.0])])
    assert values.shape == (2, 2) and mask.tolist() == [[1, 1], [1, 0]]
    values.sum().backward()
    assert a.grad is not None


def test_plots_and_summary(tmp_path: Path) -> None:
    records = [{"step": i + 1, "reward_mean": 0.1 * i, "loss": 1.0 / (i + 1), "hre_mean": None} for i in range(4)]
    files = write_plots(records, tmp_path)
    assert [f.name for f in files] == ["reward.png", "accuracy.png", "loss.png"]
    assert all(f.stat().st_size > 1000 for f in files)
    table = summary_table(records, {"eval_before": "1/4"})
    assert "reward_mean" in table and "eval_before" in table


# --- the loop -----------------------------------------------------------------------------------------


def test_loop_trains_logs_and_checkpoints(tmp_path: Path, smollm_dir: Path) -> None:
    trainer = make_trainer(tmp_path, smollm_dir, num_examples=3)
    before = adapter_weights(trainer)
    records = trainer.run(progress=False)
    assert [r["step"] for r in records] == [1, 2, 3]
    assert trainer.updates == 3  # one optimiser step per example (no accumulation): what the vLLM sync follows
    assert sorted(trainer.order) == [0, 1, 2]  # one epoch: each question once
    for record in records:
        assert record["group_size"] >= 2 and record["updated"]
        for key in ("reward_mean", "hre_mean", "pre_mean", "loss", "kl", "grad_norm", "tree_nodes", "teacher_calls",
                    "tokens", "time_s"):  # fmt: skip
            assert record[key] is not None and math.isfinite(record[key]), key
    after = adapter_weights(trainer)
    assert any(not torch.equal(before[n], after[n]) for n in before)
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in lines] == [1, 2, 3]
    assert sorted(p.name for p in tmp_path.glob("checkpoint-*")) == ["checkpoint-2", "checkpoint-3"]


@pytest.mark.parametrize("loss_type", ["grpo", "bnpo", "dr_grpo"])
def test_update_loss_is_the_whole_groups_grpo_loss(tmp_path: Path, smollm_dir: Path, loss_type: str) -> None:
    """Micro-batches of 2, accumulated, give grpo_loss of the whole group, with the configured normalisation."""
    config = small_config()
    training = dataclasses.replace(config.training, grpo=dataclasses.replace(config.training.grpo, loss_type=loss_type))
    trainer = make_trainer(tmp_path, smollm_dir, num_examples=1, config=dataclasses.replace(config, training=training))
    row = ROWS[0]
    result = trainer.search_fn(row["question"], row["answer"], random.Random(0), 0)
    batch = trainer.tokenise(row["question"], result.trajectories)
    group = len(batch.completion_ids)
    assert group > 2 and len({len(c) for c in batch.completion_ids}) > 1  # several micro-batches, unequal lengths
    grpo, size = training.grpo, training.optimizer.micro_batch_size
    advantages = group_advantages(batch.rewards, grpo.advantage_clip)
    expected = 0.0
    with torch.no_grad(), trainer.reference.active():
        ref = trainer._logprobs(batch, range(group))
    with torch.no_grad():
        logprobs = trainer._logprobs(batch, range(group))
        # The whole group at once, except for bnpo, which TRL (and the loop) average per micro-batch.
        parts = (
            [range(i, min(group, i + size)) for i in range(0, group, size)] if loss_type == "bnpo" else [range(group)]
        )
        for members in parts:
            lp, mask = pad([logprobs[i] for i in members])
            loss, _ = grpo_loss(
                lp, lp, pad([ref[i] for i in members])[0], advantages[list(members)], mask,
                epsilon=grpo.clip_epsilon, beta=grpo.beta, loss_type=loss_type,
                max_completion_length=trainer.settings.max_completion_tokens,
            )  # fmt: skip
            expected += float(loss) * len(members) / group
    assert trainer.update(batch)["loss"] == pytest.approx(expected, rel=1e-4, abs=1e-7)


def test_search_runs_once_per_example(tmp_path: Path, smollm_dir: Path) -> None:
    trainer = make_trainer(tmp_path, smollm_dir, num_examples=2)
    calls = []
    inner = trainer.search_fn
    trainer.search_fn = lambda *args: calls.append(args[0]) or inner(*args)
    trainer.run(progress=False)
    assert len(calls) == 2


def test_nan_loss_skips_the_update(tmp_path: Path, smollm_dir: Path, caplog: pytest.LogCaptureFixture) -> None:
    trainer = make_trainer(tmp_path, smollm_dir, num_examples=1)
    before = adapter_weights(trainer)
    real = trainer.student.token_logprobs

    def poisoned(prompts, completions, *args):
        out = real(prompts, completions, *args)
        return [lp * float("nan") if torch.is_grad_enabled() else lp for lp in out]

    trainer.student.token_logprobs = poisoned
    record = trainer.train_example()
    assert record["skipped"] and not record["updated"] and trainer.updates == 0
    assert "non-finite loss" in caplog.text
    after = adapter_weights(trainer)
    assert all(torch.equal(before[n], after[n]) for n in before)
    assert all(p.grad is None for p in trainer.student.model.parameters())


def test_legacy_mode_trains(tmp_path: Path, smollm_dir: Path) -> None:
    trainer = make_trainer(tmp_path, smollm_dir, num_examples=1, loss="legacy")
    record = trainer.train_example()
    assert record["updated"] and math.isfinite(record["loss"])


def test_reference_snapshot_adapter(tmp_path: Path, smollm_dir: Path) -> None:
    config = small_config()
    grpo = dataclasses.replace(config.training.grpo, update_ref_every=1)
    config = dataclasses.replace(config, training=dataclasses.replace(config.training, grpo=grpo))
    trainer = make_trainer(tmp_path, smollm_dir, num_examples=2, config=config)
    trainer.train_example()
    model = trainer.student.model
    assert "reference" in model.peft_config and model.active_adapter == "default"
    snapshot = {n: p for n, p in model.named_parameters() if ".reference." in n}
    assert snapshot and not any(p.requires_grad for p in snapshot.values())
    for name, param in snapshot.items():  # the snapshot equals the policy right after the update
        assert torch.equal(param, dict(model.named_parameters())[name.replace(".reference.", ".default.")])
    record = trainer.train_example()
    assert record["kl"] is not None and record["kl"] >= 0
    assert model.active_adapter == "default"
    trainer.save()
    assert (tmp_path / "checkpoint-2" / "adapter" / "reference" / "adapter_model.safetensors").is_file()
