"""--resume continues exactly: 4 examples straight == 2 examples, a stop, a resume for the other 2."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch
from test_loop import adapter_weights, make_trainer


def straight_vs_resumed(loop, tmp_path: Path, smollm_dir: Path) -> None:
    straight = make_trainer(loop, tmp_path / "straight", smollm_dir, num_examples=4)
    straight.run(progress=False)

    first = make_trainer(loop, tmp_path / "split", smollm_dir, num_examples=4)
    first.run_config = dataclasses.replace(first.run_config, num_examples=2)
    first.run(progress=False)  # stops after 2, writing checkpoint-2 (the schedule still spans 4)
    second = make_trainer(loop, tmp_path / "split", smollm_dir, num_examples=4)
    assert second.resume() and second.step == 2
    second.run(progress=False)

    assert first.order + second.order == straight.order
    want, got = adapter_weights(straight), adapter_weights(second)
    for name in want:
        torch.testing.assert_close(got[name], want[name], rtol=1e-5, atol=1e-6)
    assert [r["step"] for r in second.metrics.records] == [1, 2, 3, 4]
    assert second.optimizer.state_dict()["state"].keys() == straight.optimizer.state_dict()["state"].keys()
    assert second.scheduler.get_last_lr() == straight.scheduler.get_last_lr()


def test_resume_is_exact_tiny_model(loop, tmp_path: Path, smollm_dir: Path) -> None:
    straight_vs_resumed(loop, tmp_path, smollm_dir)
