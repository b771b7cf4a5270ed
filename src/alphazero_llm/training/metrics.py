"""Per-example metrics: a JSONL file, optional wandb / tensorboard, PNG plots and a summary table.

On resume the JSONL is rewritten from the checkpoint's metrics, so that records of examples lost
with a killed process (after the last checkpoint) do not appear twice. It is rewritten only when the
first new record is logged: a run that fails before it (a corrupt checkpoint, a bad flag, a model
that does not load) leaves the file as it found it.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

logger = logging.getLogger(__name__)

# The curves plotted at the end: (file stem, metric keys).
PLOTS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("reward", ("reward_mean", "reward_max")),
    ("accuracy", ("hre_mean", "best_correct")),
    ("loss", ("loss", "kl")),
)
SUMMARY_KEYS = ("reward_mean", "hre_mean", "pre_mean", "loss", "kl", "grad_norm", "tree_nodes", "time_s")


class Reporter(Protocol):
    def log(self, record: Mapping[str, Any], step: int) -> None: ...
    def close(self) -> None: ...


class MetricsLog:
    """Appends one JSON object per example to `path` and forwards it to the reporters.

    `history` (a checkpoint's records) replaces the file's contents when the first record is logged,
    not before (module docstring).
    """

    def __init__(self, path: Path, history: Sequence[Mapping[str, Any]] = (), reporters: Sequence[Reporter] = ()):
        self.path = Path(path)
        self.records: list[dict[str, Any]] = [dict(r) for r in history]
        self.reporters = list(reporters)
        self._synced = False  # whether the file holds `records` yet

    def log(self, record: Mapping[str, Any]) -> None:
        record = dict(record)
        if not self._synced:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            lines = "".join(json.dumps(r, sort_keys=True) + "\n" for r in self.records)
            self.path.write_text(lines, encoding="utf-8")
            self._synced = True
        self.records.append(record)
        with self.path.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(record, sort_keys=True) + "\n")
        for reporter in self.reporters:
            reporter.log({k: v for k, v in record.items() if isinstance(v, int | float)}, int(record["step"]))

    def close(self) -> None:
        for reporter in self.reporters:
            reporter.close()


def make_reporter(kind: str, log_dir: Path, run_config: Mapping[str, Any]) -> Reporter | None:
    """wandb or tensorboard, imported only when asked for. wandb reads WANDB_API_KEY from the environment."""
    if kind == "none":
        return None
    if kind == "wandb":
        try:
            import wandb
        except ImportError as exc:
            raise RuntimeError("--report-to wandb needs the wandb package: pip install wandb") from exc
        if not os.environ.get("WANDB_API_KEY") and not os.environ.get("WANDB_MODE"):
            logger.warning("WANDB_API_KEY is not set; wandb will use its own login or fail")
        return _WandbReporter(wandb.init(project="alphazero-llm-trainer", config=dict(run_config), dir=str(log_dir)))
    if kind == "tensorboard":
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as exc:
            raise RuntimeError(
                "--report-to tensorboard needs the tensorboard package: pip install tensorboard"
            ) from exc
        return _TensorboardReporter(SummaryWriter(log_dir=str(log_dir / "tensorboard")))
    raise ValueError(f"unknown reporter {kind!r}")


class _WandbReporter:
    def __init__(self, run: Any) -> None:
        self.run = run

    def log(self, record: Mapping[str, Any], step: int) -> None:
        self.run.log(dict(record), step=step)

    def close(self) -> None:
        self.run.finish()


class _TensorboardReporter:
    def __init__(self, writer: Any) -> None:
        self.writer = writer

    def log(self, record: Mapping[str, Any], step: int) -> None:
        for key, value in record.items():
            self.writer.add_scalar(key, value, step)

    def close(self) -> None:
        self.writer.close()


def write_plots(records: Sequence[Mapping[str, Any]], out_dir: Path) -> list[Path]:
    """One PNG per entry of PLOTS (value against example step). Returns the files written."""
    import matplotlib

    matplotlib.use("Agg")  # no display on training machines
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for stem, keys in PLOTS:
        fig, ax = plt.subplots(figsize=(6, 4))
        for key in keys:
            points = [(r["step"], r[key]) for r in records if _finite(r.get(key))]
            if points:
                ax.plot(*zip(*points, strict=True), marker=".", label=key)
        ax.set_xlabel("example")
        ax.set_title(stem)
        if ax.has_data():
            ax.legend()
        path = out_dir / f"{stem}.png"
        fig.savefig(path, dpi=100)
        plt.close(fig)
        written.append(path)
    return written


def summary_table(records: Sequence[Mapping[str, Any]], extra: Mapping[str, Any] | None = None) -> str:
    """A plain-text table: mean of each key over the first and the last half of the run, and overall."""
    half = len(records) // 2
    parts = {"first half": records[:half], "second half": records[half:], "all": records}
    lines = [f"{'metric':<14}" + "".join(f"{name:>14}" for name in parts)]
    for key in SUMMARY_KEYS:
        cells = [_mean([r.get(key) for r in rows]) for rows in parts.values()]
        lines.append(f"{key:<14}" + "".join(f"{'-' if c is None else f'{c:.4g}':>14}" for c in cells))
    for key, value in (extra or {}).items():
        lines.append(f"{key:<14}{value!s:>14}")
    return "\n".join(lines)


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and math.isfinite(value)


def _mean(values: Sequence[Any]) -> float | None:
    kept = [float(v) for v in values if _finite(v)]
    return sum(kept) / len(kept) if kept else None
