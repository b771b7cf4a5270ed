"""The fault-injecting proxy: each fault as the HTTP client sees it, forwarding, and a seeded schedule."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from alphazero_llm.testing.fake_openai import FakeOpenAIServer
from alphazero_llm.testing.fault_proxy import FAULT_KINDS, FaultProxy, FaultSchedule

BODY = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}


async def post(proxy: FaultProxy, timeout: float = 2.0) -> httpx.Response:
    async with httpx.AsyncClient(timeout=timeout, trust_env=False) as http:
        return await http.post(f"{proxy.base_url}/chat/completions", json=BODY)


def through(kind: str | None, **kw):
    async def main():
        async with FakeOpenAIServer(lambda body: "hello") as fake:
            schedule = FaultSchedule(rate=1.0, kinds=(kind,)) if kind else FaultSchedule()
            async with FaultProxy(fake.base_url, schedule, **kw) as proxy:
                try:
                    return await post(proxy, timeout=kw.get("hang_s", 2.0) / 4)
                finally:
                    assert proxy.counts[kind or "forwarded"] == 1

    return asyncio.run(main())


def test_forwards_when_no_fault():
    r = through(None)
    assert r.status_code == 200 and r.json()["choices"][0]["message"]["content"] == "hello"


def test_429_with_retry_after():
    r = through("429", retry_after_s=3)
    assert r.status_code == 429 and r.headers["retry-after"] == "3"


def test_500():
    assert through("500").status_code == 500


def test_malformed_json():
    r = through("malformed")
    assert r.status_code == 200
    with pytest.raises(ValueError):
        r.json()


def test_dropped_connection():
    with pytest.raises(httpx.RemoteProtocolError):
        through("drop")


def test_hang_past_the_client_timeout_and_stop_does_not_wait_for_it():
    with pytest.raises(httpx.ReadTimeout):
        through("hang", hang_s=2.0)


def test_schedule_is_seeded_and_near_its_rate():
    def draws(seed):
        proxy = FaultProxy("http://127.0.0.1:1", FaultSchedule(rate=0.3, seed=seed))
        return [proxy.next_fault() for _ in range(2000)]

    a = draws(5)
    assert a == draws(5) and a != draws(6)
    assert 0.25 < sum(f is not None for f in a) / len(a) < 0.35
    assert {f for f in a if f} == set(FAULT_KINDS)


def test_only_loopback_upstreams():
    with pytest.raises(ValueError, match="loopback"):
        FaultProxy("https://openrouter.ai/api/v1")
    with pytest.raises(ValueError, match="rate"):
        FaultSchedule(rate=1.5)
