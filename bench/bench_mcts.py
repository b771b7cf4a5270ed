"""Benchmark MCTS simulations per second against a teacher server with injected latency.

    python bench/bench_mcts.py [--repeats 3] [--iterations 16] [--latency 0.2] [--teachers 4]

Every teacher request goes through the fault proxy (`alphazero_llm.testing.fault_proxy`, no
faults) with `--latency` seconds of injected latency, in front of a fast fake OpenAI-compatible
server on 127.0.0.1 that answers every request with a distinct step. Each expansion asks for
5 "right" + 5 "wrong" steps. Both arms run the same `search` on the same `TeacherEnsemble`:

- original: `parallel_simulations=1` and sequential proposals (one request after another, the
  directions one after the other), as the original trainer did;
- concurrent: the project's expansion (all requests of an expansion in flight at once) with
  `parallel_simulations=8` and virtual loss (bounded by `client.max_concurrency`).

PRE is a constant 0 and the terminal check is rule-based, so the time measured is the search's
and the teachers'. No student is loaded, so a step's UTF-8 bytes stand in for its token ids
(`Proposers.encode`); a real tokenizer would only add its own, equal, cost to both arms. Prints
the median simulations per second of each arm and their ratio.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import itertools
import random
import statistics
import time

from alphazero_llm.config import TeacherModelConfig, load_config
from alphazero_llm.data import Problem
from alphazero_llm.mcts import ConstantStepScorer, Evaluator, Partial, ProposedStep, Proposers, search
from alphazero_llm.mcts.proposers import TeacherProposer
from alphazero_llm.models.teachers import TeacherEnsemble
from alphazero_llm.models.terminal import TerminalChecker
from alphazero_llm.testing.fake_openai import FakeOpenAIServer
from alphazero_llm.testing.fault_proxy import FaultProxy

PROBLEM = Problem(
    question="Janet's ducks lay 16 eggs per day. She eats three for breakfast. How many eggs are left?",
    gold="13",
    solution="She has 16 - 3 = <<16-3=13>>13 eggs left.\n#### 13",
    id="bench-0",
)
N_RIGHT = N_WRONG = 5


def byte_encode(text: str) -> tuple[int, ...]:
    """Token ids for a step that arrives as text. No student tokenizer is loaded in this benchmark,
    so a step's UTF-8 bytes serve as its ids: the search only stores and concatenates them."""
    return tuple(text.encode())


class SequentialProposer:
    """The original design: one request at a time, directions one after the other."""

    def __init__(self, inner: TeacherProposer) -> None:
        self.inner, self.name = inner, inner.name
        self.lock = asyncio.Lock()

    async def propose(self, problem: Problem, partial: Partial, direction: str, n: int) -> list[ProposedStep]:
        async with self.lock:
            steps: list[ProposedStep] = []
            for _ in range(n):
                steps += await self.inner.propose(problem, partial, direction, 1)
            return steps

    def tokens_used(self) -> int:
        return self.inner.tokens_used()


async def _arm(proposers: Proposers, parallel: int, iterations: int, seed: int) -> float:
    full = load_config()
    config = full.training
    mcts = dataclasses.replace(
        config.mcts,
        num_iterations=iterations,
        num_right=N_RIGHT,
        num_wrong=N_WRONG,
        num_student=0,
        parallel_simulations=parallel,
    )
    evaluator = Evaluator(
        TerminalChecker.rules_only(full.teachers.terminal_checker), ConstantStepScorer(0.0), config.rewards
    )
    start = time.perf_counter()
    result = await search(PROBLEM, proposers, evaluator, mcts, random.Random(seed))
    elapsed = time.perf_counter() - start
    if result.stats.proposer_failures:
        raise RuntimeError(f"proposals failed: {result.stats.proposer_failures}")
    return iterations / elapsed


async def run(args: argparse.Namespace) -> None:
    config = load_config()
    ids = itertools.count()
    fake = await FakeOpenAIServer(lambda body: f"Step {next(ids)}: 16 - 3 = 13 eggs.").start()
    proxy = await FaultProxy(fake.base_url, latency_s=args.latency).start()
    try:
        teachers = [
            TeacherModelConfig(f"t{i}", "local", "fake", proxy.base_url, "BENCH_TEACHER_KEY")
            for i in range(args.teachers)
        ]
        ens = TeacherEnsemble(
            teachers,
            config.teachers.client,
            config.teachers.bandit,
            tokens_per_expansion=config.training.mcts.tokens_per_expansion,
            rng=random.Random(0),
            env={},
        )
        async with ens:
            teacher = TeacherProposer(ens)
            original = Proposers(SequentialProposer(teacher), encode=byte_encode, credit=teacher.credit)
            concurrent = Proposers(teacher, encode=byte_encode, credit=teacher.credit)
            await _arm(concurrent, 8, 8, 0)  # warm-up: connections, first-call imports
            seq, conc = [], []
            for r in range(args.repeats):  # interleaved, so drift hits both arms alike
                seq.append(await _arm(original, 1, args.iterations, r))
                conc.append(await _arm(concurrent, 8, args.iterations, r))
    finally:
        await proxy.stop()
        await fake.stop()
    s, c = statistics.median(seq), statistics.median(conc)
    print(f"fake teacher server, +{args.latency * 1000:.0f} ms injected latency, {args.teachers} teachers")
    print(
        f"{N_RIGHT} right + {N_WRONG} wrong steps per expansion, {args.iterations} simulations, {args.repeats} repeats"
    )
    print(f"original   (parallel=1, sequential): {s:7.2f} sim/s  (runs: {', '.join(f'{x:.2f}' for x in seq)})")
    print(f"concurrent (parallel=8, gathered):   {c:7.2f} sim/s  (runs: {', '.join(f'{x:.2f}' for x in conc)})")
    print(f"speed-up: {c / s:.1f}x  (goal >= 5x)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--iterations", type=int, default=16)
    parser.add_argument("--latency", type=float, default=0.2, help="seconds injected per request by the proxy")
    parser.add_argument("--teachers", type=int, default=4)
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
