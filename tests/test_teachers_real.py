"""The teacher ensemble against the real SmolLM2 server on 127.0.0.1, directly and behind injected faults."""

from __future__ import annotations

import asyncio
import random
import time

import pytest

from alphazero_llm.config import BanditConfig, TeacherClientConfig, TeacherModelConfig
from alphazero_llm.models.teachers import Proposal, TeacherEnsemble
from alphazero_llm.testing.fault_proxy import FAULT_KINDS, FaultProxy, FaultSchedule

pytestmark = pytest.mark.slow

Q = "Janet has 3 eggs and buys 4 more. How many eggs does she have?"
BANDIT = BanditConfig(temperature=0.2, exploration=0.1, prior_value=0.5, prior_count=1.0)


def client_config(timeout_s: float, max_concurrency: int) -> TeacherClientConfig:
    return TeacherClientConfig(
        timeout_s=timeout_s, local_timeout_s=timeout_s, max_retries=4, backoff_base_s=0.2, backoff_max_s=2.0, max_retry_after_s=5.0,
        max_concurrency=max_concurrency, disable_after_failures=0, temperature=0.8, rate_limits={},
    )  # fmt: skip


def teachers(base_url: str, model: str, names=("smol-a", "smol-b")) -> list[TeacherModelConfig]:
    # Two names for one server: the ensemble treats them as two teachers (own accounting, own bandit arm).
    return [TeacherModelConfig(n, "local", model, base_url, "LOCAL_TEACHER_KEY") for n in names]


def test_propose_against_the_real_server(smollm_server):
    async def main():
        ens = TeacherEnsemble(
            teachers(smollm_server.base_url, smollm_server.model_name),
            client_config(timeout_s=120, max_concurrency=4),
            BANDIT,
            tokens_per_expansion=8,
            rng=random.Random(0),
            env={},  # loopback: no key variable needed
        )
        async with ens:
            right = await ens.propose_detailed(Q, "", "right", 3)
            wrong = await ens.propose_detailed(Q, "Janet starts with 3 eggs.", "wrong", 2)
            return right, wrong, ens.metrics()

    right, wrong, m = asyncio.run(main())
    for p, n in ((right, 3), (wrong, 2)):
        assert (p.answered, p.failed) == (n, 0), p.errors
        assert len(p.steps) + p.dropped + p.merged == n
        assert all(s.teacher in ("smol-a", "smol-b") and s.text.strip() == s.text for s in p.steps)
    assert right.steps or wrong.steps
    assert m["teachers/total/tokens_in"] > 0 and 0 < m["teachers/total/tokens_out"] <= 5 * 8


def test_200_proposals_under_30_percent_faults(smollm_server):
    """Every proposal completes or is reported as failed; no exception escapes; every fault kind happens."""
    timeout_s = 45.0  # above the real server's latency at this concurrency on 2 busy cores

    async def main() -> tuple[list[Proposal], dict[str, int], dict[str, float], float]:
        schedule = FaultSchedule(rate=0.3, seed=0)
        async with FaultProxy(smollm_server.base_url, schedule, hang_s=timeout_s + 5, retry_after_s=1) as proxy:
            ens = TeacherEnsemble(
                teachers(proxy.base_url, smollm_server.model_name),
                client_config(timeout_s=timeout_s, max_concurrency=12),
                BANDIT,
                tokens_per_expansion=2,  # the server is slow; the step text is not what is tested here
                rng=random.Random(0),
                env={},
            )
            start = time.perf_counter()
            async with ens:
                directions = ["right", "wrong"] * 100
                results = await asyncio.gather(*(ens.propose_detailed(Q, "", d, 1) for d in directions))
            return results, dict(proxy.counts), ens.metrics(), time.perf_counter() - start

    results, counts, m, elapsed = asyncio.run(main())
    print(f"200 proposals in {elapsed:.0f}s; proxy {counts}; failures {m['teachers/total/failures']:.0f}")
    assert len(results) == 200
    assert all(p.answered + p.failed == 1 for p in results)
    assert all(p.errors for p in results if p.failed)
    assert set(FAULT_KINDS) <= set(counts)
    assert m["teachers/total/requests"] == 200
    assert m["teachers/total/retries"] >= sum(counts[k] for k in FAULT_KINDS)
    assert m["teachers/total/failures"] <= 10  # a proposal fails only after 5 faults in a row
    assert sum(p.answered for p in results) == m["teachers/total/successes"]
