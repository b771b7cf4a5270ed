"""The training loop on scripted proposers and a tiny real StudentModel (random Llama + LoRA, SmolLM2 tokenizer)."""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import json
import math
import re
from pathlib import Path

import pytest
import torch
from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

from alphazero_llm.config import Config, load_config, override
from alphazero_llm.data import Problem
from alphazero_llm.mcts import Partial, ProposedStep
from alphazero_llm.mcts.evaluate import path_pre
from alphazero_llm.models.student import StudentModel
from alphazero_llm.models.terminal import TerminalChecker
from alphazero_llm.training.assembly import example_seed, student_policy
from alphazero_llm.training.grpo import group_advantages, grpo_loss, legacy_loss
from alphazero_llm.training.loop import Trainer, pad
from alphazero_llm.training.metrics import summary_table, write_plots
from alphazero_llm.training.optim import lr_factor
from alphazero_llm.training.sampler import QuestionSampler
from alphazero_llm.training.sources import MCTSSource

PROBLEMS = [Problem(f"What is {i} + 1?", str(i + 1), f"{i} + 1 = {i + 1}\n#### {i + 1}", f"q{i}") for i in range(3)]


class ScriptedTeacher:
    """Right: the correct `#### n`; wrong: a filler step and a wrong answer. Deterministic."""

    name = "teachers"

    def __init__(self) -> None:
        self.tokens = 0

    async def propose(self, problem: Problem, partial: Partial, direction: str, n: int) -> list[ProposedStep]:
        gold = int(re.search(r"(\d+) \+ 1", problem.question).group(1)) + 1
        texts = [f"{gold - 1} plus one. #### {gold}"] if direction == "right" else ["Let me think.", "#### 0"]
        self.tokens += 5
        return [ProposedStep(t, "scripted", ("scripted",)) for t in texts[:n]]

    def tokens_used(self) -> int:
        return self.tokens


def small_config(**changes) -> Config:
    """The shipped config, small: a 4-iteration search of scripted teacher steps, a big learning rate."""
    config = load_config()
    training = override(
        config.training,
        {
            "seed": 3,
            "environment.system_prompt": "Solve it.",
            "mcts.num_iterations": 4, "mcts.num_right": 1, "mcts.num_wrong": 2, "mcts.num_student": 0,
            "mcts.max_depth": 3, "mcts.rollout": False,  # these tests are about the loss: no rollouts, faster
            "optimizer.learning_rate": 1e-2, "optimizer.warmup_steps": 1, "optimizer.micro_batch_size": 2,
            "run.save_every": 2, "run.log_interval": 1, "run.loss": "grpo", "run.keep_last": 0,
            **changes,
        },
    )  # fmt: skip
    return dataclasses.replace(config, training=training)


def mcts_source(loop: asyncio.AbstractEventLoop, student: StudentModel, config: Config) -> MCTSSource:
    """The run's source on scripted teachers: the real student policy (tiny model) scores PRE and tokenises."""
    training = config.training
    return MCTSSource(
        loop,
        lambda step: student_policy(student, config, example_seed(training.seed, step)),
        ScriptedTeacher(),
        TerminalChecker.rules_only(config.teachers.terminal_checker),
        training.mcts,
        training.rewards,
    )


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


def make_trainer(loop, tmp_path: Path, smollm_dir: Path, num_examples: int, config: Config | None = None, **changes):
    config = config or small_config()
    run = {"run.num_examples": num_examples, "run.checkpoint_dir": str(tmp_path)}
    config = dataclasses.replace(config, training=override(config.training, {**run, **changes}))
    student = tiny_student(smollm_dir, config)
    return Trainer(student, mcts_source(loop, student, config), PROBLEMS, config.training)


def adapter_weights(trainer: Trainer) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in trainer.student.model.named_parameters() if "lora_" in n}


# --- pure parts -------------------------------------------------------------------------------------


def test_sampler_without_replacement_and_cycling() -> None:
    sampler = QuestionSampler(size=4, seed=1)
    drawn = [sampler.at(example) for example in range(12)]
    for epoch in range(3):
        assert sorted(drawn[4 * epoch : 4 * epoch + 4]) == [0, 1, 2, 3]
    assert drawn[:4] != drawn[4:8] or drawn[4:8] != drawn[8:]  # reshuffled per epoch
    # A pure function of the global index: another sampler (another rank, a resumed run) agrees.
    assert [QuestionSampler(size=4, seed=1).at(example) for example in range(5, 12)] == drawn[5:]
    state = sampler.state(5)  # the checkpoint's position after 5 examples: epoch 1, its second question next
    assert (state.epoch, state.index) == (1, 1) and state.order[state.index] == drawn[5]
    with pytest.raises(ValueError, match="holds 4 questions, the dataset 5"):
        QuestionSampler(size=5, seed=1).check(state)


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


def test_loop_trains_logs_and_checkpoints(loop, tmp_path: Path, smollm_dir: Path) -> None:
    trainer = make_trainer(loop, tmp_path, smollm_dir, num_examples=3)
    before = adapter_weights(trainer)
    records = trainer.run(progress=False)
    assert [r["step"] for r in records] == [1, 2, 3]
    assert trainer.updates == 3  # one optimiser step per example (no accumulation): what the vLLM sync follows
    assert sorted(trainer.order) == [0, 1, 2]  # one epoch: each question once
    for record in records:
        assert record["group_size"] >= 2 and record["updated"]
        for key in ("reward_mean", "hre_mean", "pre_mean", "loss", "kl", "grad_norm", "tree_nodes", "teacher_calls",
                    "student_tokens", "teacher_tokens", "time_s"):  # fmt: skip
            assert record[key] is not None and math.isfinite(record[key]), key
    after = adapter_weights(trainer)
    assert any(not torch.equal(before[n], after[n]) for n in before)
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in lines] == [1, 2, 3]
    assert sorted(p.name for p in tmp_path.glob("checkpoint-*")) == ["checkpoint-2", "checkpoint-3"]


@pytest.mark.parametrize("loss_type", ["grpo", "bnpo", "dr_grpo"])
def test_update_loss_is_the_whole_groups_grpo_loss(loop, tmp_path: Path, smollm_dir: Path, loss_type: str) -> None:
    """Micro-batches of 2, accumulated, give grpo_loss of the whole group, with the configured normalisation."""
    trainer = make_trainer(
        loop, tmp_path, smollm_dir, num_examples=1, config=small_config(**{"grpo.loss_type": loss_type})
    )
    training = trainer.config
    batch = trainer.batch(trainer.source(PROBLEMS[0], trainer.rng, 0))
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
                max_completion_length=trainer.run_config.max_completion_tokens,
            )  # fmt: skip
            expected += float(loss) * len(members) / group
    assert trainer.update(batch)["loss"] == pytest.approx(expected, rel=1e-4, abs=1e-7)


def test_source_runs_once_per_example(loop, tmp_path: Path, smollm_dir: Path) -> None:
    trainer = make_trainer(loop, tmp_path, smollm_dir, num_examples=2)
    calls = []
    inner = trainer.source
    trainer.source = lambda *args: calls.append(args[0]) or inner(*args)
    records = trainer.run(progress=False)
    assert len(calls) == 2
    assert [r["problem_id"] for r in records] == [p.id for p in calls]  # the Problem travels to the logs


def test_nan_loss_skips_the_update(loop, tmp_path: Path, smollm_dir: Path, caplog: pytest.LogCaptureFixture) -> None:
    trainer = make_trainer(loop, tmp_path, smollm_dir, num_examples=1)
    before = adapter_weights(trainer)
    real = trainer.student.token_logprobs

    def poisoned(prompts, completions, *args, **kwargs):
        out = real(prompts, completions, *args, **kwargs)
        return [lp * float("nan") if torch.is_grad_enabled() else lp for lp in out]

    trainer.student.token_logprobs = poisoned
    record = trainer.train_example()
    assert record["skipped"] and not record["updated"] and trainer.updates == 0
    assert "non-finite loss" in caplog.text
    after = adapter_weights(trainer)
    assert all(torch.equal(before[n], after[n]) for n in before)
    assert all(p.grad is None for p in trainer.student.model.parameters())


def test_legacy_mode_trains(loop, tmp_path: Path, smollm_dir: Path) -> None:
    trainer = make_trainer(loop, tmp_path, smollm_dir, num_examples=1, **{"run.loss": "legacy"})
    record = trainer.train_example()
    assert record["updated"] and math.isfinite(record["loss"])


def test_reference_snapshot_adapter(loop, tmp_path: Path, smollm_dir: Path) -> None:
    trainer = make_trainer(
        loop, tmp_path, smollm_dir, num_examples=2, config=small_config(**{"grpo.update_ref_every": 1})
    )
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


# --- the seam: tokens, temperature and PRE travel unchanged from the search to the loss and the logs ---


def record_calls(student: StudentModel) -> dict[str, list]:
    """Wrap the student's sampler and scorer to record what they were given and what sampling returned."""
    calls: dict[str, list] = {"sampled": [], "scored": []}
    sample, score = student.sample_ids, student.token_logprobs

    def sample_ids(prompt_ids, sampling, **kwargs):
        out = sample(prompt_ids, sampling, **kwargs)
        calls["sampled"].extend(
            (tuple(p), sampling.temperature, [tuple(ids) for ids in o]) for p, o in zip(prompt_ids, out, strict=True)
        )
        return out

    def token_logprobs(prompt_ids, completion_ids, **kwargs):
        if torch.is_grad_enabled():  # the loss's forward (the search scores under no_grad)
            temperature = kwargs.get("temperature", 1.0)
            calls["scored"].extend(
                (tuple(p), tuple(c), temperature) for p, c in zip(prompt_ids, completion_ids, strict=True)
            )
        return score(prompt_ids, completion_ids, **kwargs)

    student.sample_ids, student.token_logprobs = sample_ids, token_logprobs
    return calls


def capture_groups(trainer: Trainer) -> list:
    groups, inner = [], trainer.source
    trainer.source = lambda *args: groups.append(inner(*args)) or groups[-1]
    return groups


def with_student_steps(**changes) -> Config:
    config = small_config(
        **{"mcts.num_student": 2, "mcts.num_iterations": 6, "mcts.tokens_per_expansion": 6, **changes}
    )
    generation = dataclasses.replace(config.models.generation, temperature=0.55)  # not 1, not the shipped 0.7
    return dataclasses.replace(config, models=dataclasses.replace(config.models, generation=generation))


def test_the_loss_scores_exactly_the_tokens_the_student_sampled(loop, tmp_path: Path, smollm_dir: Path) -> None:
    """Token identity: each student step's ids are the sampled ids (a prefix cut at a line break), sampled
    after exactly the prompt and the earlier steps' ids, and the loss scores exactly prompt + all steps' ids."""
    trainer = make_trainer(loop, tmp_path, smollm_dir, num_examples=1, config=with_student_steps())
    calls, groups = record_calls(trainer.student), capture_groups(trainer)
    trainer.train_example()
    (group,) = groups
    sampled = {}
    for context, _, outputs in calls["sampled"]:
        sampled.setdefault(context, []).extend(outputs)
    student_steps = 0
    for traj in group.trajectories:
        context = group.prompt_ids
        for step in traj.steps:
            if step.source == "student":
                student_steps += 1
                outputs = sampled[context]  # the student was conditioned on exactly this context
                assert any(out[: len(step.token_ids)] == step.token_ids for out in outputs), step.text
                assert trainer.student.tokenizer.decode(list(step.token_ids)) == step.text
            context += step.token_ids
        assert context == group.prompt_ids + traj.completion_ids
    assert student_steps > 0
    eos = trainer.student.tokenizer.eos_token_id
    expected = {
        (group.prompt_ids, traj.completion_ids + ((eos,) if traj.terminal else ())) for traj in group.trajectories
    }
    assert {(p, c) for p, c, _ in calls["scored"]} == expected


def test_the_loss_scores_at_the_sampling_temperature(loop, tmp_path: Path, smollm_dir: Path) -> None:
    trainer = make_trainer(loop, tmp_path, smollm_dir, num_examples=1, config=with_student_steps())
    calls = record_calls(trainer.student)
    trainer.train_example()
    step_temperatures = {t for _, t, _ in calls["sampled"]}
    assert step_temperatures == {0.55}  # models.yaml's generation temperature, as configured above
    assert calls["scored"] and {t for _, _, t in calls["scored"]} == step_temperatures


def test_the_logged_pre_is_the_pre_in_the_reward(loop, tmp_path: Path, smollm_dir: Path) -> None:
    """With PRE the only term of the value, every reward is its trajectory's path PRE, and the log says so."""
    config = small_config(**{
        "rewards.hre_weight": 0.0, "rewards.pre_weight": 1.0, "rewards.length_penalty": 0.0,
        "rewards.direction_bonus": 0.0, "rewards.format_bonus": 0.0, "rewards.pre_discount": 0.9,
    })  # fmt: skip
    trainer = make_trainer(loop, tmp_path, smollm_dir, num_examples=1, config=config)
    groups = capture_groups(trainer)
    record = trainer.train_example()
    (group,) = groups
    pres = [t.pre for t in group.trajectories]
    assert len(set(pres)) > 1  # the student scored the steps differently: PRE is not a constant here
    for traj in group.trajectories:
        assert traj.pre == pytest.approx(path_pre([s.pre for s in traj.steps], 0.9))
        assert traj.reward == pytest.approx(traj.pre)
    assert record["pre_mean"] == pytest.approx(sum(pres) / len(pres))
    assert record["pre_mean"] == pytest.approx(record["reward_mean"])
    logged = json.loads((tmp_path / "metrics.jsonl").read_text().splitlines()[-1])
    assert logged["pre_mean"] == pytest.approx(record["pre_mean"])


# --- gradients: micro-batching must not change them --------------------------------------------------


def lora_grads(trainer: Trainer) -> dict[str, torch.Tensor]:
    return {n: p.grad.detach().clone() for n, p in trainer.student.model.named_parameters() if p.grad is not None}


def whole_group_grads(trainer: Trainer, batch) -> dict[str, torch.Tensor]:
    """The gradient of the group's loss from ONE backward over the whole group (bnpo: TRL's definition, the
    micro-batches' token means weighted by their share, still one graph and one backward)."""
    config, group = trainer.config, len(batch.completion_ids)
    grpo, legacy, accumulate = config.grpo, config.legacy, config.optimizer.gradient_accumulation_steps
    trainer.student.model.zero_grad(set_to_none=True)
    with torch.no_grad(), trainer.reference.active():
        ref = trainer._logprobs(batch, range(group))
    trainer.student.model.train()
    logprobs = trainer._logprobs(batch, range(group))
    if config.run.loss == "legacy":
        lp, mask = pad(logprobs)
        loss, _ = legacy_loss(lp, pad(ref)[0], batch.rewards, mask, legacy.min_reward_threshold, legacy.kl_weight)
    else:
        advantages = group_advantages(batch.rewards, grpo.advantage_clip)
        size = config.optimizer.micro_batch_size if grpo.loss_type == "bnpo" else group
        loss = 0.0
        for start in range(0, group, size):
            members = list(range(start, min(group, start + size)))
            lp, mask = pad([logprobs[i] for i in members])
            part, _ = grpo_loss(
                lp, lp.detach(), pad([ref[i] for i in members])[0], advantages[members], mask,
                epsilon=grpo.clip_epsilon, beta=grpo.beta, loss_type=grpo.loss_type,
                max_completion_length=config.run.max_completion_tokens,
            )  # fmt: skip
            loss = loss + part * len(members) / group
    (loss / accumulate).backward()
    trainer.student.model.eval()
    grads = lora_grads(trainer)
    trainer.student.model.zero_grad(set_to_none=True)
    return grads


@pytest.mark.parametrize(
    "changes",
    [
        {"grpo.loss_type": "grpo"},
        {"grpo.loss_type": "bnpo"},
        {"grpo.loss_type": "dr_grpo"},
        {"run.loss": "legacy"},
    ],
    ids=["grpo", "bnpo", "dr_grpo", "legacy"],
)
def test_accumulated_gradient_equals_one_whole_group_backward(loop, tmp_path: Path, smollm_dir: Path, changes) -> None:
    """On a perturbed adapter (LoRA B != 0, so the KL and its gradient are not 0), micro-batches of 2 with
    uneven kept counts, accumulated by `Trainer.update`, give the whole group's gradient within 1e-5."""
    config = small_config(**{"optimizer.gradient_accumulation_steps": 2, "run.save_every": 2, **changes})
    trainer = make_trainer(loop, tmp_path, smollm_dir, num_examples=2, config=config)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, param in trainer.student.model.named_parameters():
            if "lora_B" in name:
                param.copy_(torch.randn(param.shape, generator=generator) * 0.05)
    batch = trainer.batch(trainer.source(PROBLEMS[0], trainer.rng, 0))
    group = len(batch.completion_ids)
    assert group >= 5 and len({len(c) for c in batch.completion_ids}) > 1
    # The case: kept rows bunched in some micro-batches (legacy), distinct rewards (GRPO).
    pattern = [0.5, -0.1, -0.2, -0.3, 0.5, 0.5, 0.5, 0.5, 0.25, -0.4]
    batch = dataclasses.replace(batch, rewards=torch.tensor((pattern * 2)[:group]))
    expected = whole_group_grads(trainer, batch)
    record = trainer.update(batch)
    assert not record["updated"]  # the first of 2 accumulated examples: the gradients stay in .grad
    assert record["kl"] > 0
    got = lora_grads(trainer)
    assert got.keys() == expected.keys() and expected
    assert max(float(g.abs().max()) for g in expected.values()) > 1e-4  # a gradient worth comparing
    for name in expected:
        torch.testing.assert_close(got[name], expected[name], atol=1e-5, rtol=1e-4, msg=name)
