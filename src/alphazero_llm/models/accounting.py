"""Per-teacher accounting: requests, retries, failures, tokens and estimated cost, as flat metrics."""

from __future__ import annotations

from dataclasses import dataclass, fields

from alphazero_llm.config import TeacherModelConfig


@dataclass
class TeacherStats:
    """Counters of one teacher (or of the terminal checker's model). Mutable: updated as requests finish."""

    requests: int = 0  # logical requests (one step asked for); each may take several attempts
    attempts: int = 0  # HTTP attempts
    retries: int = 0
    successes: int = 0
    failures: int = 0  # logical requests that got no answer after their retries
    tokens_in: int = 0
    tokens_out: int = 0
    dropped: int = 0  # answers that were empty or garbage
    duplicates: int = 0  # answers merged into an identical step
    disabled: int = 0  # 1 once the teacher is out of the run


class Accounting:
    """Counters per teacher and the prices to turn tokens into an estimated cost (USD)."""

    def __init__(self) -> None:
        self._stats: dict[str, TeacherStats] = {}
        self._prices: dict[str, tuple[float, float]] = {}

    def register(self, teacher: TeacherModelConfig) -> None:
        self._stats.setdefault(teacher.name, TeacherStats())
        self._prices[teacher.name] = (teacher.price_input_per_mtok, teacher.price_output_per_mtok)

    def stats(self, name: str) -> TeacherStats:
        return self._stats.setdefault(name, TeacherStats())

    def cost_usd(self, name: str) -> float:
        s = self.stats(name)
        price_in, price_out = self._prices.get(name, (0.0, 0.0))
        return (s.tokens_in * price_in + s.tokens_out * price_out) / 1e6

    def metrics(self, prefix: str = "teachers") -> dict[str, float]:
        """Flat `{prefix}/{teacher}/{counter}` values plus `{prefix}/total/{counter}`, for any logger."""
        out: dict[str, float] = {}
        totals: dict[str, float] = {}
        for name, stats in sorted(self._stats.items()):
            for f in fields(stats):
                value = float(getattr(stats, f.name))
                out[f"{prefix}/{name}/{f.name}"] = value
                totals[f.name] = totals.get(f.name, 0.0) + value
            cost = self.cost_usd(name)
            out[f"{prefix}/{name}/cost_usd"] = cost
            totals["cost_usd"] = totals.get("cost_usd", 0.0) + cost
        out.update({f"{prefix}/total/{key}": value for key, value in totals.items()})
        return out
