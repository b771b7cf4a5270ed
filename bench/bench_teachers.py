"""Benchmark one expansion's teacher requests: sequential (the original design) vs the concurrent ensemble.

    python bench/bench_teachers.py [--repeats 5] [--latency 0.2] [--teachers 4]
    python bench/bench_teachers.py --upstream http://127.0.0.1:8000/v1 --model MODEL   # a real server

One expansion asks for 5 "right" + 5 "wrong" steps. Every request goes through the fault proxy
(`alphazero_llm.testing.fault_proxy`, no faults) with `--latency` seconds of injected latency, in
front of a fast fake OpenAI-compatible server on 127.0.0.1 (or `--upstream`). Both arms use the
same `TeacherClient` (same HTTP stack, same retry policy); only the scheduling differs:

- sequential: the ten requests one after another, as the original trainer did;
- concurrent: `propose(right, 5)` and `propose(wrong, 5)` together, all ten in flight at once
  (bounded by `client.max_concurrency` from config/teacher_models.yaml and the rate limits).

Prints the median wall time of each arm over the repeats and their ratio. The ideal ratio is the
number of requests (10): concurrency can only hide latency, and the concurrent arm still waits
for its slowest request, plus the per-request client and proxy overhead on this machine.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import time

from alphazero_llm.config import TeacherModelConfig, load_config
from alphazero_llm.models.prompts import proposal_messages
from alphazero_llm.models.teachers import TeacherEnsemble
from alphazero_llm.testing.fake_openai import FakeOpenAIServer
from alphazero_llm.testing.fault_proxy import FaultProxy

QUESTION = "Janet's ducks lay 16 eggs per day. She eats three for breakfast. How many eggs are left?"
PARTIAL = "Janet's ducks lay 16 eggs per day."
N_RIGHT = N_WRONG = 5


def _reply(body: dict) -> str:
    return "She eats 3, so 16 - 3 = 13 eggs are left." if "mistake" not in str(body) else "16 + 3 = 19 eggs."


async def _sequential(ens: TeacherEnsemble) -> float:
    start = time.perf_counter()
    for direction, n in (("right", N_RIGHT), ("wrong", N_WRONG)):
        messages = proposal_messages(QUESTION, PARTIAL, direction)
        for name in ens.bandit.choose(n, ens.rng):
            await ens.client.complete(name, messages, ens.tokens_per_expansion)
    return time.perf_counter() - start


async def _concurrent(ens: TeacherEnsemble) -> float:
    start = time.perf_counter()
    right, wrong = await asyncio.gather(
        ens.propose_detailed(QUESTION, PARTIAL, "right", N_RIGHT),
        ens.propose_detailed(QUESTION, PARTIAL, "wrong", N_WRONG),
    )
    elapsed = time.perf_counter() - start
    if right.failed or wrong.failed:
        raise RuntimeError(f"requests failed: {right.errors + wrong.errors}")
    return elapsed


async def run(args: argparse.Namespace) -> None:
    config = load_config()
    tokens = config.training.mcts.tokens_per_expansion
    fake = None if args.upstream else await FakeOpenAIServer(_reply).start()
    upstream = args.upstream or fake.base_url
    proxy = await FaultProxy(upstream, latency_s=args.latency).start()
    try:
        teachers = [
            TeacherModelConfig(f"t{i}", "local", args.model, proxy.base_url, "BENCH_TEACHER_KEY")
            for i in range(args.teachers)
        ]
        ens = TeacherEnsemble(
            teachers,
            config.teachers.client,
            config.teachers.bandit,
            tokens_per_expansion=tokens,
            rng=random.Random(0),
            env={},
        )
        async with ens:
            await _concurrent(ens)  # warm-up: connections, first-call imports
            seq, conc = [], []
            for _ in range(args.repeats):  # interleaved, so drift hits both arms alike
                seq.append(await _sequential(ens))
                conc.append(await _concurrent(ens))
            metrics = ens.metrics()
    finally:
        await proxy.stop()
        if fake is not None:
            await fake.stop()
    s, c = statistics.median(seq), statistics.median(conc)
    print(f"upstream: {'fake server' if fake else upstream}, +{args.latency * 1000:.0f} ms injected latency")
    print(f"{N_RIGHT} right + {N_WRONG} wrong steps, {args.teachers} teachers, {args.repeats} repeats (median)")
    print(f"sequential: {s * 1000:8.1f} ms   (runs: {', '.join(f'{x * 1000:.0f}' for x in seq)})")
    print(f"concurrent: {c * 1000:8.1f} ms   (runs: {', '.join(f'{x * 1000:.0f}' for x in conc)})")
    print(f"speed-up:   {s / c:8.2f}x  (ideal {N_RIGHT + N_WRONG}x; goal >= 6x)")
    print(f"requests: {metrics['teachers/total/requests']:.0f}, failures: {metrics['teachers/total/failures']:.0f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--latency", type=float, default=0.2, help="seconds injected per request by the proxy")
    parser.add_argument("--teachers", type=int, default=4)
    parser.add_argument("--upstream", default=None, help="a loopback OpenAI-compatible base URL (default: fake)")
    parser.add_argument("--model", default="fake", help="model id to send to --upstream")
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
