"""Questions without replacement, cycling when exhausted; the position is part of the checkpoint."""

from __future__ import annotations

import random
from dataclasses import dataclass

from alphazero_llm.training.checkpoint import SamplerState


def epoch_order(size: int, seed: int, epoch: int) -> tuple[int, ...]:
    """The order of epoch `epoch`: a permutation of range(size) from its own seeded RNG.

    Each epoch's order depends only on (seed, epoch), so a resumed run reshuffles exactly as a straight one.
    """
    order = list(range(size))
    random.Random(f"{seed}:{epoch}").shuffle(order)
    return tuple(order)


@dataclass
class QuestionSampler:
    """`next()` gives dataset indices, each once per epoch, in a seeded order."""

    size: int
    seed: int
    state: SamplerState | None = None

    def __post_init__(self) -> None:
        if self.size <= 0:
            raise ValueError("the training set is empty")
        if self.state is None:
            self.state = SamplerState(epoch=0, index=0, order=epoch_order(self.size, self.seed, 0))
        elif len(self.state.order) != self.size:
            raise ValueError(f"checkpoint sampler holds {len(self.state.order)} questions, the dataset {self.size}")

    def next(self) -> int:
        assert self.state is not None
        state = self.state
        if state.index >= len(state.order):
            state = SamplerState(
                epoch=state.epoch + 1, index=0, order=epoch_order(self.size, self.seed, state.epoch + 1)
            )
        self.state = SamplerState(epoch=state.epoch, index=state.index + 1, order=state.order)
        return state.order[state.index]
