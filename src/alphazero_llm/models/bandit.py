"""Dynamic teacher weights: a bandit over teachers, fed the values the tree search backs up.

Each teacher's value is the mean of the values credited to it, smoothed by `prior_count`
pseudo-observations of `prior_value` (so an untried teacher is neither ignored nor trusted
blindly). Choice probabilities are softmax(mean / temperature), mixed with `exploration` of
the uniform distribution: the EXP3 mixing that keeps every teacher's probability at least
exploration / K, so a teacher that had a bad start can recover. The state is a plain dict of
floats: JSON round-trips it exactly, so a resumed run chooses exactly as the original would.
"""

from __future__ import annotations

import logging
import math
import random
from collections.abc import Mapping, Sequence
from typing import Any

from alphazero_llm.config import BanditConfig

logger = logging.getLogger(__name__)

STATE_VERSION = 1


class TeacherBandit:
    def __init__(self, teachers: Sequence[str], config: BanditConfig) -> None:
        if not teachers:
            raise ValueError("a bandit needs at least one teacher")
        if len(set(teachers)) != len(teachers):
            raise ValueError(f"teacher names repeat: {list(teachers)}")
        self.teachers = tuple(teachers)
        self.config = config
        self.counts = dict.fromkeys(self.teachers, 0.0)
        self.sums = dict.fromkeys(self.teachers, 0.0)

    def mean(self, teacher: str) -> float:
        c = self.config
        return (self.sums[teacher] + c.prior_value * c.prior_count) / max(self.counts[teacher] + c.prior_count, 1e-12)

    def probabilities(self, available: Sequence[str] | None = None) -> dict[str, float]:
        """Choice probabilities over `available` teachers (all when None); they sum to 1."""
        allowed = set(self.teachers if available is None else available)
        names = tuple(t for t in self.teachers if t in allowed)
        if not names:
            raise ValueError("no teacher available to choose from")
        scaled = [self.mean(t) / self.config.temperature for t in names]
        top = max(scaled)
        weights = [math.exp(s - top) for s in scaled]  # shifted by the max: no overflow
        total = sum(weights)
        gamma = self.config.exploration
        return {t: (1 - gamma) * w / total + gamma / len(names) for t, w in zip(names, weights, strict=True)}

    def choose(self, k: int, rng: random.Random, available: Sequence[str] | None = None) -> list[str]:
        """`k` teachers drawn with replacement (a teacher may be asked several times)."""
        if k <= 0:
            return []
        probs = self.probabilities(available)
        return rng.choices(list(probs), weights=list(probs.values()), k=k)

    def update(self, teacher: str, value: float) -> None:
        """Credit `teacher` with one backed-up `value` (unknown teachers are ignored, with a warning)."""
        if teacher not in self.counts:
            logger.warning("Bandit update for unknown teacher %r ignored", teacher)
            return
        if not math.isfinite(value):
            raise ValueError(f"bandit value must be finite, got {value!r}")
        self.counts[teacher] += 1.0
        self.sums[teacher] += float(value)

    def state_dict(self) -> dict[str, Any]:
        return {"version": STATE_VERSION, "counts": dict(self.counts), "sums": dict(self.sums)}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore `state_dict()` output. Teachers absent from this run are dropped (logged); new ones start fresh."""
        if state.get("version") != STATE_VERSION:
            raise ValueError(f"bandit state version {state.get('version')!r}, expected {STATE_VERSION}")
        counts, sums = state["counts"], state["sums"]
        dropped = sorted(set(counts) - set(self.teachers))
        if dropped:
            logger.warning("Bandit state holds teachers not in this run, dropped: %s", dropped)
        for t in self.teachers:
            if t in counts:
                self.counts[t], self.sums[t] = float(counts[t]), float(sums[t])
