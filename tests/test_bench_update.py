"""The pure helpers of bench/bench_update.py (no model): storage byte counting, the fixed workload, the
loss settings handed to TRL and the first-step loss agreement check."""

from __future__ import annotations

import dataclasses
import importlib.util
import sys
from pathlib import Path

import pytest
import torch

BENCH = Path(__file__).resolve().parents[1] / "bench" / "bench_update.py"


def load_bench():
    spec = importlib.util.spec_from_file_location("bench_update", BENCH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


bench = load_bench()


def test_unique_storage_bytes_counts_shared_storage_once() -> None:
    a = torch.zeros(10, dtype=torch.float32)
    b = torch.zeros(3, dtype=torch.bfloat16)
    assert bench.unique_storage_bytes([a, b]) == 40 + 6
    assert bench.unique_storage_bytes([a, a[2:5], a.view(2, 5), b]) == 46  # views share the storage


def test_unique_storage_bytes_tied_and_copied_models() -> None:
    embed = torch.nn.Embedding(7, 4)
    head = torch.nn.Linear(4, 7, bias=False)
    head.weight = embed.weight  # tied, as in SmolLM2
    model = torch.nn.Sequential(embed, head)
    one = bench.unique_storage_bytes(bench.model_tensors(model))
    assert one == 7 * 4 * 4
    copy = torch.nn.Sequential(torch.nn.Embedding(7, 4), torch.nn.Linear(4, 7, bias=False))
    assert bench.unique_storage_bytes(bench.model_tensors(model, copy)) == one + 7 * 4 * 4 * 2


def test_fixed_workload_is_deterministic() -> None:
    rewards = bench.fixed_rewards(8, seed=0)
    assert rewards == bench.fixed_rewards(8, seed=0) and len(rewards) == 8 and rewards[0] == 1.0
    solution = "a = 1\nb = 2\nc = a + b = 3\n#### 3"
    texts = bench.variant_texts(solution, 5, seed=0)
    assert texts == bench.variant_texts(solution, 5, seed=0)
    assert len(texts) == 5 and texts[0] == solution
    assert all(t.endswith("#### 3") for t in texts)
    assert any(len(t) > len(solution) for t in texts) and any(len(t) < len(solution) for t in texts)


def grpo_settings(**changes):
    from alphazero_llm.config import load_config

    grpo = load_config().training.grpo
    return dataclasses.replace(grpo, **changes)


@pytest.mark.parametrize("loss_type", ["grpo", "bnpo", "dr_grpo"])
def test_trl_loss_kwargs_carry_our_loss_type_and_normaliser(loss_type: str) -> None:
    grpo = grpo_settings(loss_type=loss_type, beta=0.04, clip_epsilon=0.2, entropy_coef=0.0)
    kwargs = bench.trl_loss_kwargs(grpo, 64)
    assert kwargs == {"loss_type": loss_type, "beta": 0.04, "epsilon": 0.2, "max_completion_length": 64}


def test_trl_loss_kwargs_default_is_training_yaml_loss_type() -> None:
    from alphazero_llm.config import load_config

    grpo = load_config().training.grpo
    assert bench.trl_loss_kwargs(grpo, 256)["loss_type"] == grpo.loss_type


def test_trl_loss_kwargs_refuse_what_trl_would_compute_differently() -> None:
    with pytest.raises(ValueError, match="entropy"):
        bench.trl_loss_kwargs(grpo_settings(entropy_coef=0.01), 64)
    with pytest.raises(ValueError, match="loss_type"):
        bench.trl_loss_kwargs(grpo_settings(loss_type="dapo"), 64)
    with pytest.raises(ValueError, match="positive"):
        bench.trl_loss_kwargs(grpo_settings(), 0)


def test_trl_grpo_config_takes_the_kwargs() -> None:
    """TRL keeps what we pass: its dr_grpo divides by this max_completion_length, as ours does."""
    trl = pytest.importorskip("trl")
    kwargs = bench.trl_loss_kwargs(grpo_settings(loss_type="dr_grpo"), 64)
    config = trl.GRPOConfig(output_dir="unused", report_to="none", use_cpu=True, **kwargs)
    assert (config.loss_type, config.max_completion_length, config.beta) == ("dr_grpo", 64, kwargs["beta"])
    assert (
        config.epsilon == kwargs["epsilon"] and config.epsilon_high is None
    )  # the trainer then clips at epsilon both sides


def test_relative_difference_and_agreement() -> None:
    assert bench.relative_difference(0.0, 0.0) == 0.0
    assert bench.relative_difference(1.0, 0.99) == pytest.approx(0.01)
    assert bench.relative_difference(-2.0, 2.0) == pytest.approx(2.0)
    assert bench.losses_agree(0.000121474, 0.000121493)  # measured in float32 (1.5e-4 apart)
    assert not bench.losses_agree(0.043, 0.00047)  # dr_grpo against grpo: the mismatch this check catches
    assert not bench.losses_agree(1.0, -1.0, rtol=1.0) and bench.losses_agree(1.0, 0.5, rtol=0.5)


def test_loss_verdict_names_what_explains_a_difference() -> None:
    assert bench.loss_verdict(0.000121474, 0.000121493, "float32", 0.0) == "yes"
    assert bench.loss_verdict(0.000121474, 0.000121493, "bfloat16", 0.05) == "yes"
    assert bench.loss_verdict(0.043, 0.00047, "float32", 0.0) == "NO: the two sides compute different losses"
    bf16 = bench.loss_verdict(0.000268, 0.000200, "bfloat16", 0.0)
    assert bf16.startswith("NO (bfloat16") and "--dtype float32" in bf16 and "dropout" not in bf16
    dropout = bench.loss_verdict(0.000268, 0.000200, "float32", 0.05)
    assert dropout.startswith("NO (LoRA dropout 0.05") and "--lora-dropout 0" in dropout


def test_tail_keeps_the_last_lines() -> None:
    text = "\n".join(f"line {i}" for i in range(100)) + "\n"
    assert bench.tail(text, 3) == "line 97\nline 98\nline 99"
    assert bench.tail("only\n", 3) == "only"
