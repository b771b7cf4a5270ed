"""Checkpoints: round trip, atomicity under a crash, find_latest, corruption, no secrets, real adapter."""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

import pytest
import torch
from torch import nn

from alphazero_llm.training import checkpoint as ckpt
from alphazero_llm.training.checkpoint import (
    CheckpointError,
    CheckpointState,
    SamplerState,
    capture_rng,
    find_latest,
    load_checkpoint,
    restore_rng,
    save_checkpoint,
)


class FakeAdapter:
    """Stands in for StudentModel's save_adapter / load_adapter: one tensor in safetensors."""

    def __init__(self, value: float) -> None:
        self.weight = torch.full((3,), value)

    def save_adapter(self, directory: Path) -> None:
        from safetensors.torch import save_file

        directory.mkdir(parents=True)
        save_file({"w": self.weight}, str(directory / "adapter_model.safetensors"))

    def load_adapter(self, directory: Path) -> None:
        from safetensors.torch import load_file

        self.weight = load_file(str(directory / "adapter_model.safetensors"))["w"]


def make_training(seed: int = 0):
    torch.manual_seed(seed)
    model = nn.Linear(4, 2)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    warmup, total = 2, 10

    def schedule(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1 + math.cos(math.pi * (step - warmup) / (total - warmup)))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
    return model, optimizer, scheduler


def train_step(model, optimizer, scheduler) -> None:
    loss = model(torch.randn(8, 4)).pow(2).mean()
    loss.backward()
    optimizer.step()
    scheduler.step()
    optimizer.zero_grad()


def make_state(step, optimizer, scheduler, rng) -> CheckpointState:
    return CheckpointState(
        step=step,
        optimizer=optimizer.state_dict(),
        scheduler=scheduler.state_dict(),
        rng=capture_rng(rng),
        sampler=SamplerState(epoch=1, index=3, order=(4, 0, 2, 1, 3)),
        teacher_bandit={"weights": {"a": 0.25, "b": 0.75}, "counts": {"a": 3, "b": 5}},
        metrics=({"step": 1, "reward": 0.5, "loss": float("nan")}, {"step": 2, "reward": 0.75, "loss": 0.1}),
    )


def test_round_trip_continues_exactly(tmp_path):
    rng = random.Random(7)
    model, optimizer, scheduler = make_training()
    train_step(model, optimizer, scheduler)
    train_step(model, optimizer, scheduler)
    adapter = FakeAdapter(1.5)
    path = save_checkpoint(tmp_path, make_state(2, optimizer, scheduler, rng), adapter)
    params_at_save = [p.detach().clone() for p in model.parameters()]

    # The uninterrupted run: draws and one more step.
    expected_draws = (rng.random(), torch.rand(3), rng.random())
    train_step(model, optimizer, scheduler)
    expected_params = [p.detach().clone() for p in model.parameters()]
    expected_lr = scheduler.get_last_lr()

    # The resumed run: fresh objects, state loaded.
    model2, optimizer2, scheduler2 = make_training(seed=123)
    with torch.no_grad():
        for p, saved in zip(model2.parameters(), params_at_save, strict=True):
            p.copy_(saved)
    adapter2 = FakeAdapter(0.0)
    state = load_checkpoint(path, adapter2)
    optimizer2.load_state_dict(state.optimizer)
    scheduler2.load_state_dict(state.scheduler)
    rng2 = random.Random(0)
    restore_rng(state.rng, rng2)
    draws = (rng2.random(), torch.rand(3), rng2.random())
    assert draws[0] == expected_draws[0] and draws[2] == expected_draws[2]
    assert torch.equal(draws[1], expected_draws[1])
    train_step(model2, optimizer2, scheduler2)
    for p, q in zip(model2.parameters(), expected_params, strict=True):
        torch.testing.assert_close(p.detach(), q, rtol=0, atol=0)
    assert scheduler2.get_last_lr() == expected_lr
    assert torch.equal(adapter2.weight, torch.full((3,), 1.5))
    assert state.step == 2 and state.sampler == SamplerState(1, 3, (4, 0, 2, 1, 3))
    assert state.teacher_bandit["counts"] == {"a": 3, "b": 5}
    assert state.metrics[1] == {"step": 2, "reward": 0.75, "loss": 0.1} and math.isnan(state.metrics[0]["loss"])


def test_numpy_rng_restored(tmp_path):
    np = pytest.importorskip("numpy")
    rng = random.Random(1)
    _, optimizer, scheduler = make_training()
    np.random.seed(5)
    path = save_checkpoint(tmp_path, make_state(1, optimizer, scheduler, rng), FakeAdapter(0.0))
    expected = np.random.rand(3)
    restore_rng(load_checkpoint(path).rng, random.Random())
    assert (np.random.rand(3) == expected).all()


def test_latest_pointer_find_latest_and_keep_last(tmp_path):
    rng = random.Random(0)
    _, optimizer, scheduler = make_training()
    assert find_latest(tmp_path) is None
    for step in (1, 2, 10):
        save_checkpoint(tmp_path, make_state(step, optimizer, scheduler, rng), FakeAdapter(step), keep_last=2)
    assert (tmp_path / "latest").read_text().strip() == "checkpoint-10"
    assert find_latest(tmp_path) == tmp_path / "checkpoint-10"
    assert sorted(p.name for p in tmp_path.glob("checkpoint-*")) == ["checkpoint-10", "checkpoint-2"]
    # A dangling pointer falls back to the highest complete step.
    (tmp_path / "latest").write_text("checkpoint-99\n")
    assert find_latest(tmp_path) == tmp_path / "checkpoint-10"
    # Re-saving an existing step replaces it whole.
    save_checkpoint(tmp_path, make_state(10, optimizer, scheduler, rng), FakeAdapter(42.0))
    adapter = FakeAdapter(0.0)
    load_checkpoint(tmp_path / "checkpoint-10", adapter)
    assert torch.equal(adapter.weight, torch.full((3,), 42.0))
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_crash_mid_write_keeps_previous_checkpoint(tmp_path, monkeypatch):
    rng = random.Random(0)
    _, optimizer, scheduler = make_training()
    save_checkpoint(tmp_path, make_state(1, optimizer, scheduler, rng), FakeAdapter(1.0))
    real_write_json = ckpt._write_json

    def crash_on_sampler(path, value):
        if path.name == "sampler.json":
            raise OSError("disk full (simulated)")
        real_write_json(path, value)

    monkeypatch.setattr(ckpt, "_write_json", crash_on_sampler)
    with pytest.raises(OSError, match="simulated"):
        save_checkpoint(tmp_path, make_state(2, optimizer, scheduler, rng), FakeAdapter(2.0))
    monkeypatch.setattr(ckpt, "_write_json", real_write_json)
    assert not (tmp_path / "checkpoint-2").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".tmp")]
    assert find_latest(tmp_path) == tmp_path / "checkpoint-1"
    adapter = FakeAdapter(0.0)
    assert load_checkpoint(find_latest(tmp_path), adapter).step == 1
    assert torch.equal(adapter.weight, torch.full((3,), 1.0))


def test_crash_in_adapter_saver_keeps_previous(tmp_path):
    rng = random.Random(0)
    _, optimizer, scheduler = make_training()
    save_checkpoint(tmp_path, make_state(1, optimizer, scheduler, rng), FakeAdapter(1.0))

    def broken_saver(directory: Path) -> None:
        directory.mkdir()
        (directory / "adapter_model.safetensors").write_bytes(b"half")
        raise RuntimeError("killed mid-save (simulated)")

    with pytest.raises(RuntimeError, match="simulated"):
        save_checkpoint(tmp_path, make_state(2, optimizer, scheduler, rng), broken_saver)
    assert not (tmp_path / "checkpoint-2").exists()
    assert find_latest(tmp_path) == tmp_path / "checkpoint-1"


@pytest.mark.parametrize(
    ("victim", "damage", "message"),
    [
        ("trainer_state.pt", b"garbage", "trainer_state.pt: contents do not match"),
        ("rng.json", None, "rng.json: missing"),
        ("meta.json", b"{not json", "meta.json: not valid JSON"),
        ("meta.json", None, "meta.json: missing"),
        ("adapter/adapter_model.safetensors", b"xx", "adapter_model.safetensors: contents do not match"),
    ],
)
def test_corrupt_or_incomplete_checkpoint_names_the_file(tmp_path, victim, damage, message):
    rng = random.Random(0)
    _, optimizer, scheduler = make_training()
    path = save_checkpoint(tmp_path, make_state(3, optimizer, scheduler, rng), FakeAdapter(1.0))
    if damage is None:
        (path / victim).unlink()
    else:
        (path / victim).write_bytes(damage)
    with pytest.raises(CheckpointError, match=message):
        load_checkpoint(path)


def test_unpicklable_trainer_state_is_refused(tmp_path):
    """weights_only=True: a pickle with arbitrary objects is rejected even when meta.json vouches for it."""
    rng = random.Random(0)
    _, optimizer, scheduler = make_training()
    path = save_checkpoint(tmp_path, make_state(3, optimizer, scheduler, rng), FakeAdapter(1.0))
    torch.save({"optimizer": {}, "evil": Path("/")}, path / "trainer_state.pt")
    meta = json.loads((path / "meta.json").read_text())
    meta["files"]["trainer_state.pt"] = ckpt.sha256_file(path / "trainer_state.pt")
    (path / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match=r"trainer_state\.pt: cannot be loaded with weights_only=True"):
        load_checkpoint(path)


def test_no_secret_from_environment_is_written(tmp_path, monkeypatch):
    monkeypatch.setenv("OPENROUTER_API_KEY", "sk-test-SECRET")
    monkeypatch.setenv("WANDB_API_KEY", "sk-test-SECRET-wandb")
    rng = random.Random(0)
    _, optimizer, scheduler = make_training()
    save_checkpoint(tmp_path, make_state(1, optimizer, scheduler, rng), FakeAdapter(1.0))
    written = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert len(written) >= 8
    for path in written:
        assert b"sk-test-SECRET" not in path.read_bytes(), path
    # And a caller that puts the key into the state by mistake is refused, leaving nothing behind.
    leaky = make_state(2, optimizer, scheduler, rng)
    leaky = CheckpointState(**{**vars(leaky), "teacher_bandit": {"config": {"key": "sk-test-SECRET"}}})
    with pytest.raises(CheckpointError, match="OPENROUTER_API_KEY"):
        save_checkpoint(tmp_path, leaky, FakeAdapter(1.0))
    assert not (tmp_path / "checkpoint-2").exists()


@pytest.mark.slow
def test_real_student_adapter_survives_save_and_load(tmp_path, smollm_dir):
    from alphazero_llm.config import load_config
    from alphazero_llm.models.student import StudentModel, StudentSpec

    spec = StudentSpec(name=str(smollm_dir), device="cpu", dtype="float32")
    student = StudentModel.load(spec, load_config().models)
    lora = {n: p for n, p in student.model.named_parameters() if "lora_" in n}
    assert lora
    torch.manual_seed(0)
    with torch.no_grad():
        for p in lora.values():
            p.add_(torch.randn_like(p) * 0.01)
    saved = {n: p.detach().clone() for n, p in lora.items()}
    _, optimizer, scheduler = make_training()
    path = save_checkpoint(tmp_path, make_state(5, optimizer, scheduler, random.Random(0)), student)
    assert (path / "adapter" / "adapter_model.safetensors").is_file()
    assert (path / "adapter" / "adapter_config.json").is_file()

    other = StudentModel.load(spec, load_config().models)
    load_checkpoint(find_latest(tmp_path), other)
    loaded = {n: p for n, p in other.model.named_parameters() if "lora_" in n}
    assert loaded.keys() == saved.keys()
    for name, value in saved.items():
        torch.testing.assert_close(loaded[name].detach(), value, rtol=0, atol=0)
