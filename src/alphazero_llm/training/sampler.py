"""The question of each example: without replacement within an epoch, cycling, seeded; a pure function of the
example's global index, so that every rank of a data-parallel run, and a run resumed with any number of
processes, draws the same question for the same example."""

from __future__ import annotations

import functools
import random
from dataclasses import dataclass

from alphazero_llm.training.checkpoint import SamplerState


@functools.lru_cache(maxsize=4)
def epoch_order(size: int, seed: int, epoch: int) -> tuple[int, ...]:
    """The order of epoch `epoch`: a permutation of range(size) from its own seeded RNG.

    Each epoch's order depends only on (seed, epoch), so a resumed run reshuffles exactly as a straight one.
    """
    order = list(range(size))
    random.Random(f"{seed}:{epoch}").shuffle(order)
    return tuple(order)


@dataclass(frozen=True)
class QuestionSampler:
    """`at(example)`: the dataset index of global example `example` (0-based), each question once per epoch."""

    size: int
    seed: int

    def __post_init__(self) -> None:
        if self.size <= 0:
            raise ValueError("the training set is empty")

    def at(self, example: int) -> int:
        epoch, index = divmod(example, self.size)
        return epoch_order(self.size, self.seed, epoch)[index]

    def state(self, done: int) -> SamplerState:
        """The position after `done` examples, as a checkpoint records it (sampler.json)."""
        epoch, index = divmod(done, self.size)
        return SamplerState(epoch=epoch, index=index, order=epoch_order(self.size, self.seed, epoch))

    def check(self, state: SamplerState) -> None:
        """A checkpoint's sampler must come from a training set of this size."""
        if len(state.order) != self.size:
            raise ValueError(f"checkpoint sampler holds {len(state.order)} questions, the dataset {self.size}")
