"""The pure helpers of bench/bench_update.py (no model): storage byte counting and the fixed workload."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

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
