"""What a trajectory source hands the trainer: a group of trajectories for one problem.

Modelled on tiny-grpo's `Experience`: a trajectory carries everything the loss and the logs need,
so that nothing reads back into a search tree (or a sampler) after the fact.

- Each `Step` holds its text *and* the token ids that render it after the prompt. A student step's
  ids are exactly the tokens the student sampled (nothing appended, stripped or re-tokenised); a
  teacher's or the reference's step is text, tokenised once when it entered the tree. The student
  was conditioned on `Group.prompt_ids` followed by the earlier steps' ids, and the loss scores
  `prompt_ids + completion_ids` (plus EOS for a terminal trajectory): the same tokens.
- `reward` is the value the source gave the trajectory, computed from `hre`, `pre` and the flags
  stored beside it, so what the logs call PRE or HRE is what the reward used.
- `Group.temperature` is the temperature the student's tokens were sampled at; the loss takes its
  log-probs at that temperature (TRL divides the logits by it, too).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from alphazero_llm.data import Problem

# Who wrote a step: the student (sampled from the policy), an LLM teacher, or the data set's reference.
StepSource = Literal["student", "teacher", "reference"]


@dataclass(frozen=True)
class Step:
    text: str  # as it appears in the completion (separators included)
    token_ids: tuple[int, ...]
    source: StepSource
    producer: str  # "student", a teacher's name, or "reference"
    direction: str  # what the step was asked as: "right", "wrong" or "student"
    pre: float | None = None  # the step's PRE given the question and the earlier steps


@dataclass(frozen=True)
class Trajectory:
    steps: tuple[Step, ...]
    reward: float
    terminal: bool  # the text states a final answer
    hre: float | None  # 0/1, or None when unfinished and not rolled out (ungraded)
    pre: float | None  # the PRE the reward used (the path's discounted mean in a tree)
    formatted: bool  # a worked `#### N` answer (`answers.worked_answer`)
    answer: str | None  # the committed answer the grader read, if any
    code: str = ""  # the tree's path code ("1" right, "0" wrong, "s" student)
    visits: int = 0  # search visits of the leaf (0: created by an expansion, never selected)

    @property
    def text(self) -> str:
        return "".join(s.text for s in self.steps)

    @property
    def completion_ids(self) -> tuple[int, ...]:
        return tuple(t for s in self.steps for t in s.token_ids)


@dataclass(frozen=True)
class Group:
    """One problem's trajectories, the prompt they continue, and the source's own per-example metrics."""

    problem: Problem
    prompt_ids: tuple[int, ...]
    trajectories: tuple[Trajectory, ...]
    temperature: float  # the student's sampling temperature; the loss scores at it
    metrics: Mapping[str, float] = field(default_factory=dict)
