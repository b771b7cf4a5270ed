"""Every prompt the student, the teachers and the terminal checker see, and the parsing of their answers.

Kept in one module so that the wording can be read, reviewed and changed in one place.

`question_messages` is THE chat prompt of a question (nanochat's `render_for_completion`): the
student's steps and rollouts, the loss, the greedy evaluation and the verifiers environment all
build the student's prompt with it, so the tokens a loss scores follow exactly the prompt the
student was conditioned on. The parsing functions are pure: a raw completion in, a cleaned step
(or None for garbage) out.
"""

from __future__ import annotations

import re
from typing import Literal

Direction = Literal["right", "wrong"]
DIRECTIONS: tuple[Direction, ...] = ("right", "wrong")

Message = dict[str, str]


def question_messages(question: str, system_prompt: str | None) -> list[Message]:
    """The student's chat prompt for `question`: the system prompt (none when empty), then the question."""
    system = [{"role": "system", "content": system_prompt}] if system_prompt else []
    return [*system, {"role": "user", "content": question}]


_SYSTEM = (
    "You help build step-by-step solutions to grade-school math problems. "
    "You write exactly ONE next reasoning step: a single short line, no preamble, no numbering."
)

_INSTRUCTION: dict[Direction, str] = {
    "right": "Write the single next step that correctly continues this solution.",
    # The wrong direction gives the search contrast: a step a student could believe, that is wrong.
    "wrong": (
        "Write the single next step that a student might plausibly write here but that contains a "
        "subtle mistake (a wrong operation, number or reading of the problem). Do not say it is wrong."
    ),
}

_FINAL_ANSWER_HINT = "If the solution is ready to conclude, the step may be the final answer as: #### [number]"


def proposal_messages(question: str, partial_solution: str, direction: Direction) -> list[Message]:
    """The chat messages asking a teacher for one next step in `direction`."""
    if direction not in _INSTRUCTION:
        raise ValueError(f"direction must be one of {list(DIRECTIONS)}, not {direction!r}")
    so_far = partial_solution.strip() or "(nothing yet: write the first step)"
    user = (
        f"Problem:\n{question.strip()}\n\n"
        f"Solution so far:\n{so_far}\n\n"
        f"{_INSTRUCTION[direction]}\n{_FINAL_ANSWER_HINT}\n\nNext step:"
    )
    return [{"role": "system", "content": _SYSTEM}, {"role": "user", "content": user}]


def terminal_messages(question: str, partial_solution: str) -> list[Message]:
    """The chat messages asking whether a partial solution already states its final answer."""
    user = (
        f"Problem:\n{question.strip()}\n\nSolution:\n{partial_solution.strip()}\n\n"
        "Has this solution reached and stated its final numeric answer? Reply with YES or NO only."
    )
    return [{"role": "user", "content": user}]


_YES_NO = re.compile(r"\b(yes|no)\b", re.IGNORECASE)


def parse_yes_no(text: str | None) -> bool | None:
    """True for a YES, False for a NO (the first one wins), None when the reply holds neither."""
    m = _YES_NO.search(text or "")
    return None if m is None else m[1].lower() == "yes"


# --- cleaning a proposed step ---------------------------------------------------------------------

# Models often echo the label the prompt ends with, or number their step.
_LEAD_IN = re.compile(r"^\s*(?:(?:next\s+)?step(?:\s*\d+)?\s*[:.)-]|\d+\s*[.)]\s|[-*•]\s)\s*", re.IGNORECASE)
_THINK_BLOCK = re.compile(r"<think>.*?(?:</think>|$)", re.DOTALL | re.IGNORECASE)
_WORD_CHAR = re.compile(r"\w")


def cut_step(text: str | None) -> str | None:
    """The first non-empty line of a completion, cleaned; None when nothing usable is left.

    The token budget is enforced by the request's `max_tokens`; the cut here is at the line
    break, since one edge of the tree is one reasoning step. Reasoning models' `<think>`
    blocks are dropped. A line with no letter or digit (`---`, `**`) is garbage.
    """
    if not text:
        return None
    text = _THINK_BLOCK.sub("", text)
    for line in text.splitlines():
        line = _LEAD_IN.sub("", line, count=1).strip()
        if line:
            return line if _WORD_CHAR.search(line) else None
    return None


def normalise_step(text: str) -> str:
    """The key two steps are merged under: whitespace collapsed (case and wording kept)."""
    return " ".join(text.split())
