"""`Sampling`: how a model samples, one frozen value shared by the student, the vLLM engine and the fakes.

The temperature and top_p of a run come from config/models.yaml's `generation` section, never from a
default here: the same values must reach the sampler and the log-probs of the loss (which are taken
at the sampling temperature, DESIGN.md).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol


@dataclass(frozen=True)
class Sampling:
    """How a model samples: one value per knob, shared by every generator (student, vLLM, fakes)."""

    max_new_tokens: int
    temperature: float  # 0 = greedy
    top_p: float
    stop: tuple[str, ...] = ()  # the text is cut before the first stop string
    stop_at_answer: bool = False  # stop at the end of the first `#### N` line (`answer_line_end`)

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, not {self.max_new_tokens}")
        if not self.temperature >= 0:  # also refuses NaN
            raise ValueError(f"temperature must be >= 0, not {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], not {self.top_p}")
        if isinstance(self.stop, str):
            raise ValueError(f"stop must be a sequence of strings, not the string {self.stop!r}")
        # A list (or any sequence) becomes a tuple, so the value stays hashable; empty strings stop nothing.
        object.__setattr__(self, "stop", tuple(s for s in self.stop if s))

    @property
    def greedy(self) -> bool:
        return self.temperature == 0

    @classmethod
    def greedy_decoding(cls, max_new_tokens: int, stop: Sequence[str] = (), stop_at_answer: bool = False) -> Sampling:
        """Temperature 0 (top_p 1.0): the most likely token at every step."""
        return cls(max_new_tokens, 0.0, 1.0, tuple(stop), stop_at_answer)


class Sampler(Protocol):
    """What samples token ids: `StudentModel`, `VLLMEngine`, `VLLMSampledStudent` (and the tests' fakes)."""

    tokenizer: Any

    def prompt_ids(self, prompt: Any) -> list[int]: ...

    def sample_ids(
        self, prompt_ids: Sequence[Sequence[int]], sampling: Sampling, *, n: int = 1, seed: int | None = None
    ) -> list[list[list[int]]]: ...


class TextGeneration:
    """`generate` and `generate_ids` for any sampler with `tokenizer`, `prompt_ids` and `sample_ids`.

    `sample_ids(prompt_ids, sampling, *, n=1, seed=None) -> [prompt][sample][token id]` is each
    sampler's one primitive (the student's, the vLLM engine's); the texts are its ids decoded (special
    tokens skipped), each cut before the first stop string, so every sampler's texts follow one rule.
    """

    tokenizer: Any

    def prompt_ids(self, prompt: Any) -> list[int]:
        raise NotImplementedError

    def sample_ids(
        self, prompt_ids: Sequence[Sequence[int]], sampling: Sampling, *, n: int = 1, seed: int | None = None
    ) -> list[list[list[int]]]:
        raise NotImplementedError

    def generate_ids(
        self, prompt_ids: Sequence[Sequence[int]], sampling: Sampling, *, n: int = 1, seed: int | None = None
    ) -> list[list[str]]:
        """`n` texts per prompt given as token ids (e.g. a templated question plus a partial answer)."""
        samples = self.sample_ids(prompt_ids, sampling, n=n, seed=seed)
        decode = self.tokenizer.decode
        return [
            [cut_at_stop(decode(ids, skip_special_tokens=True), sampling.stop) for ids in group] for group in samples
        ]

    def generate(
        self, prompts: Sequence[Any], sampling: Sampling, *, n: int = 1, seed: int | None = None
    ) -> list[list[str]]:
        """`n` texts per chat-templated prompt (a chat, or a string as one user message)."""
        return self.generate_ids([self.prompt_ids(p) for p in prompts], sampling, n=n, seed=seed)


def cut_at_stop(text: str, stop: Sequence[str]) -> str:
    """`text` up to the first stop string (all of it when none occurs)."""
    cuts = [i for i in (text.find(s) for s in stop) if i >= 0]
    return text[: min(cuts)] if cuts else text


# The first `#### N` line, through its line break: where an answer the system prompt asks for ends.
_ANSWER_LINE = re.compile(r"####[ \t]*[$£€]?[ \t]*-?[\d,]*\.?\d[^\n]*\n")


def answer_line_end(text: str) -> int | None:
    """The index just past the line break that ends `text`'s first `#### N` line, or None."""
    m = _ANSWER_LINE.search(text)
    return None if m is None else m.end()


def cut_after_answer(ids: Sequence[int], decode: Callable[[Sequence[int]], str]) -> list[int]:
    """The shortest prefix of `ids` whose text holds the first `#### N` line and its line break; all of `ids`
    when there is none (`Sampling.stop_at_answer`: what a sampler returns)."""
    if answer_line_end(decode(ids)) is None:
        return list(ids)
    low, high = 1, len(ids)  # the text of a prefix only grows: bisect for the shortest one that has it
    while low < high:
        middle = (low + high) // 2
        if answer_line_end(decode(ids[:middle])) is None:
            low = middle + 1
        else:
            high = middle
    return list(ids[:low])
