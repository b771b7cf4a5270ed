"""The student as the search asks it: proposer, rollout, PUCT prior scorer and PRE step scorer.

The student is asked as the policy that training updates: its steps and rollouts continue its own
answer, i.e. `prompt_ids(problem)` (the question's chat prompt, `prompts.question_messages`,
templated) followed by the token ids of the solution so far, exactly the context in which the loss
scores a trajectory's tokens. Its steps are thus samples of that policy (GRPO's ratio assumes so),
not replies to the teachers' "write the next step" instructions, which a small model answers with
talk about steps rather than with a step.

A student step is the shortest prefix of the sampled tokens whose text holds a line break after
some non-blank text (`first_line_ids`); all of them when the budget ran out first. Its ids are
kept verbatim and its text is their decoding: nothing is appended, stripped or re-tokenised, so
the tokens the loss scores are the tokens the student sampled.

Log-probs here are the model's own (temperature 1): PRE is the rubric's `PerplexityReward`, applied
to one step given the earlier ones; PUCT priors are the steps' mean token log-probs, softmaxed over
the siblings by the search. Only the loss, which needs the sampling distribution, scores at the
sampling temperature (`Group.temperature`).

One lock serialises the model: each call runs in a worker thread (under `torch.no_grad`, since
grad mode is per thread), so the teachers' HTTP requests stay in flight meanwhile.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from alphazero_llm.data import Problem
from alphazero_llm.mcts.proposers import Partial, ProposedStep
from alphazero_llm.models.prompts import question_messages
from alphazero_llm.models.sampling import Sampler, Sampling
from alphazero_llm.rewards import PerplexityReward


class SamplingModel(Sampler, Protocol):
    """`StudentModel`, or `VLLMSampledStudent` (vLLM samples, the student scores)."""

    def token_logprobs(
        self, prompt_ids: Sequence[list[int]], completion_ids: Sequence[list[int]], *, temperature: float = 1.0
    ) -> Any: ...

    def completion_logprobs(self, prompts: Sequence[Any], completions: Sequence[str]) -> Any: ...


def first_line_ids(decode: Callable[[Sequence[int]], str], ids: Sequence[int]) -> tuple[int, ...]:
    """The shortest prefix of `ids` whose text holds a line break after non-blank text; all of `ids` if none."""
    for end in range(1, len(ids) + 1):
        if "\n" in decode(ids[:end]).lstrip():
            return tuple(ids[:end])
    return tuple(ids)


class StudentPolicy:
    """Proposer, rollout, prior scorer and PRE step scorer on one student model (module docstring)."""

    name = "student"

    def __init__(
        self,
        model: SamplingModel,
        *,
        step: Sampling,
        rollout: Sampling,
        system_prompt: str | None,
        seed: int,
    ) -> None:
        self.model = model
        self.step_sampling = step
        self.rollout_sampling = rollout
        self.system_prompt = system_prompt
        self.pre = PerplexityReward(model)
        self._seed = seed
        self._tokens = 0
        self._lock = asyncio.Lock()
        self._prompts: dict[str, tuple[int, ...]] = {}

    # --- rendering -------------------------------------------------------------------------------

    def chat(self, problem: Problem) -> list[dict[str, str]]:
        return question_messages(problem.question, self.system_prompt)

    def prompt_ids(self, problem: Problem) -> tuple[int, ...]:
        """The templated chat prompt of `problem`: what every student step, rollout and loss continues."""
        if problem.id not in self._prompts:
            self._prompts[problem.id] = tuple(self.model.prompt_ids(self.chat(problem)))
        return self._prompts[problem.id]

    def encode(self, text: str) -> tuple[int, ...]:
        """Token ids of a step that arrives as text (a teacher's line), with no special tokens."""
        return tuple(self.model.tokenizer(text, add_special_tokens=False)["input_ids"])

    def decode(self, ids: Sequence[int]) -> str:
        return self.model.tokenizer.decode(list(ids), skip_special_tokens=True)

    # --- the model, one call at a time -----------------------------------------------------------

    def tokens_used(self) -> int:
        return self._tokens

    def _next_seed(self) -> int:
        self._seed += 1
        return self._seed

    async def _run(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        def call() -> Any:
            import torch  # only the real model needs it; the search and its fakes do not

            with torch.no_grad():
                return fn(*args, **kwargs)

        async with self._lock:
            return await asyncio.to_thread(call)

    async def _sample(self, problem: Problem, partial: Partial, sampling: Sampling, n: int) -> list[list[int]]:
        context = [*self.prompt_ids(problem), *partial.token_ids]
        (samples,) = await self._run(self.model.sample_ids, [context], sampling, n=n, seed=self._next_seed())
        self._tokens += sum(len(ids) for ids in samples)
        return samples

    # --- the search's protocols ------------------------------------------------------------------

    async def propose(self, problem: Problem, partial: Partial, direction: str, n: int) -> list[ProposedStep]:
        """`n` samples of the next line of the student's own answer (`direction` is ignored: it has one)."""
        steps = []
        for sampled in await self._sample(problem, partial, self.step_sampling, n):
            ids = first_line_ids(self.decode, sampled)
            text = self.decode(ids)
            if any(c.isalnum() for c in text):  # a blank or punctuation-only line is no step
                steps.append(ProposedStep(text, self.name, (self.name,), source="student", token_ids=ids))
        return steps

    async def answers(self, problem: Problem, sampling: Sampling, n: int) -> list[list[int]]:
        """`n` whole answers to `problem` sampled with `sampling`, as token ids (plain GRPO's group)."""
        return await self._sample(problem, Partial(""), sampling, n)

    async def finish(self, problem: Problem, partials: Sequence[Partial]) -> list[str]:
        """The student's continuation of each partial solution to the end of its answer (or the rollout
        budget), sampled in one batch."""
        contexts = [[*self.prompt_ids(problem), *p.token_ids] for p in partials]
        samples = await self._run(self.model.sample_ids, contexts, self.rollout_sampling, n=1, seed=self._next_seed())
        self._tokens += sum(len(ids) for (ids,) in samples)
        return [self.decode(ids) for (ids,) in samples]

    async def logprobs(self, problem: Problem, partial: Partial, steps: Sequence[Sequence[int]]) -> list[float]:
        """Each step's mean token log-prob after the prompt and `partial` (-inf for an empty step)."""
        context = [*self.prompt_ids(problem), *partial.token_ids]
        steps_ids = [list(s) for s in steps]
        scored = await self._run(self.model.token_logprobs, [context] * len(steps), steps_ids, temperature=1.0)
        return [math.fsum(float(x) for x in lp) / len(lp) if len(lp) else -math.inf for lp in scored]

    async def score(self, problem: Problem, partial: Partial, steps: Sequence[Sequence[int]]) -> list[float]:
        """PRE of each step given the question and `partial` (`PerplexityReward.score_steps`)."""
        return await self._run(self.pre.score_steps, self.chat(problem), problem.solution, partial.token_ids, steps)
