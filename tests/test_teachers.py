"""Teacher ensemble logic, fast: pure functions, and the real client against a fake server on 127.0.0.1."""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time
from dataclasses import replace
from pathlib import Path

import pytest

from alphazero_llm.config import (
    BanditConfig,
    ConfigError,
    RateLimitConfig,
    TeacherClientConfig,
    TeacherModelConfig,
    load_config,
)
from alphazero_llm.models.accounting import Accounting
from alphazero_llm.models.bandit import TeacherBandit
from alphazero_llm.models.keys import LOOPBACK_PLACEHOLDER_KEY, MissingApiKeyError, parse_teacher_spec, resolve_api_key
from alphazero_llm.models.prompts import cut_step, normalise_step, parse_yes_no, proposal_messages
from alphazero_llm.models.teacher_client import NoTeacherAvailable, ProposalFailed, backoff_delay, parse_retry_after
from alphazero_llm.models.teachers import TeacherEnsemble
from alphazero_llm.testing.fake_openai import FakeOpenAIServer, Reply
from alphazero_llm.testing.fault_proxy import FaultProxy, FaultSchedule

SECRET = "sk-test-SECRET"
CLIENT = TeacherClientConfig(
    timeout_s=2.0,
    local_timeout_s=2.0,
    max_retries=3,
    backoff_base_s=0.01,
    backoff_max_s=0.05,
    max_retry_after_s=1.0,
    max_concurrency=8,
    disable_after_failures=0,
    temperature=0.7,
    rate_limits={},
)
BANDIT = BanditConfig(temperature=0.2, exploration=0.1, prior_value=0.5, prior_count=1.0)
Q = "Janet has 3 eggs and buys 4 more. How many eggs does she have?"


def teacher(name: str, base_url: str, **kw) -> TeacherModelConfig:
    return TeacherModelConfig(
        name=name, provider="local", model=f"m-{name}", base_url=base_url, api_key_env="TEST_KEY", **kw
    )


def ensemble(teachers, client=CLIENT, seed=0, key=SECRET) -> TeacherEnsemble:
    return TeacherEnsemble(
        teachers, client, BANDIT, tokens_per_expansion=20, rng=random.Random(seed), env={"TEST_KEY": key}
    )


# --- pure parts -------------------------------------------------------------------------------------


def test_backoff_grows_is_capped_and_jittered():
    rng = random.Random(0)
    cfg = replace(CLIENT, backoff_base_s=1.0, backoff_max_s=8.0)
    for attempt, cap in [(0, 1.0), (1, 2.0), (2, 4.0), (3, 8.0), (6, 8.0)]:
        delays = [backoff_delay(attempt, cfg, rng, None) for _ in range(200)]
        assert all(cap / 2 <= d <= cap for d in delays)
        assert len(set(delays)) > 100  # jittered, not one value


def test_backoff_honours_retry_after_and_refuses_a_too_long_one():
    cfg = replace(CLIENT, max_retry_after_s=10.0)
    assert backoff_delay(0, cfg, random.Random(0), 3.0) == 3.0
    assert backoff_delay(0, cfg, random.Random(0), 11.0) is None


def test_parse_retry_after_forms():
    assert parse_retry_after({"retry-after": "2"}) == 2.0
    assert parse_retry_after({"retry-after-ms": "250", "retry-after": "9"}) == 0.25
    assert parse_retry_after({}) is None
    assert parse_retry_after({"retry-after": "soon"}) is None
    date = time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(time.time() + 30))
    assert 25 <= parse_retry_after({"retry-after": date}) <= 31


@pytest.mark.parametrize(
    ("raw", "step"),
    [
        ("Janet has 3 + 4 = 7 eggs.\nThen she sells them.", "Janet has 3 + 4 = 7 eggs."),
        ("\n\n  Step 2: 3 + 4 = 7\n", "3 + 4 = 7"),
        ("Next step: 7 eggs", "7 eggs"),
        ("<think>hmm, 3+4</think>\n#### 7", "#### 7"),
        ("", None),
        (None, None),
        ("   \n \n", None),
        ("---\n3+4", None),
        ("**", None),
    ],
)
def test_cut_step(raw, step):
    assert cut_step(raw) == step


def test_normalise_and_yes_no_and_prompts():
    assert normalise_step("  3 +  4\t= 7 ") == "3 + 4 = 7"
    assert (parse_yes_no("YES."), parse_yes_no("no, not yet"), parse_yes_no("maybe")) == (True, False, None)
    right, wrong = proposal_messages(Q, "", "right"), proposal_messages(Q, "3 + 4 = 7", "wrong")
    assert Q in right[-1]["content"] and "first step" in right[-1]["content"]
    assert "mistake" in wrong[-1]["content"] and "3 + 4 = 7" in wrong[-1]["content"]
    with pytest.raises(ValueError, match="direction"):
        proposal_messages(Q, "", "sideways")


def test_bandit_prefers_higher_values_keeps_exploring_and_restores_exactly():
    bandit = TeacherBandit(["a", "b", "c"], BANDIT)
    assert bandit.probabilities() == pytest.approx({"a": 1 / 3, "b": 1 / 3, "c": 1 / 3})
    for _ in range(20):
        bandit.update("a", 1.0)
        bandit.update("b", 0.1)
    probs = bandit.probabilities()
    assert sum(probs.values()) == pytest.approx(1.0)
    assert probs["a"] > probs["c"] > probs["b"] >= BANDIT.exploration / 3
    assert set(bandit.probabilities(["b", "c"])) == {"b", "c"}
    # The state goes through JSON and back exactly: the same rng then draws the same teachers.
    restored = TeacherBandit(["a", "b", "c"], BANDIT)
    restored.load_state_dict(json.loads(json.dumps(bandit.state_dict())))
    assert restored.state_dict() == bandit.state_dict()
    assert restored.choose(50, random.Random(7)) == bandit.choose(50, random.Random(7))
    with pytest.raises(ValueError, match="finite"):
        bandit.update("a", float("nan"))


def test_accounting_metrics_are_flat_with_cost():
    acc = Accounting()
    acc.register(teacher("paid", "http://127.0.0.1:1/v1", price_input_per_mtok=1.0, price_output_per_mtok=2.0))
    s = acc.stats("paid")
    s.tokens_in, s.tokens_out, s.requests = 1_000_000, 500_000, 3
    m = acc.metrics()
    assert m["teachers/paid/cost_usd"] == pytest.approx(2.0)
    assert m["teachers/total/requests"] == 3.0
    assert all(isinstance(v, float) for v in m.values())


# --- keys and endpoints -----------------------------------------------------------------------------


def test_missing_key_names_the_variable_and_loopback_gets_a_placeholder():
    remote = TeacherModelConfig("r", "openrouter", "m", "https://openrouter.ai/api/v1", "MY_OR_KEY")
    with pytest.raises(MissingApiKeyError, match="MY_OR_KEY"):
        resolve_api_key(remote, env={})
    with pytest.raises(MissingApiKeyError, match="MY_OR_KEY"):
        resolve_api_key(remote, env={"MY_OR_KEY": ""})
    assert resolve_api_key(remote, env={"MY_OR_KEY": SECRET}) == SECRET
    local = replace(remote, base_url="http://127.0.0.1:8000/v1")
    assert resolve_api_key(local, env={}) == LOOPBACK_PLACEHOLDER_KEY
    with pytest.raises(MissingApiKeyError, match="OPENROUTER_API_KEY"):
        TeacherEnsemble.from_config(load_config().teachers, tokens_per_expansion=20, rng=random.Random(0), env={})


def test_parse_teacher_spec():
    t = parse_teacher_spec("name=local, base_url=http://127.0.0.1:8000/v1,model=smol,api_key_env=LOCAL_KEY")
    assert (t.name, t.provider, t.model, t.api_key_env) == ("local", "127.0.0.1", "smol", "LOCAL_KEY")
    t = parse_teacher_spec(
        "name=o,provider=openai,base_url=https://api.openai.com/v1,model=gpt-4.1-mini,api_key_env=OPENAI_API_KEY,"
        "price_input_per_mtok=0.4,price_output_per_mtok=1.6"
    )
    assert (t.provider, t.price_input_per_mtok, t.price_output_per_mtok) == ("openai", 0.4, 1.6)
    with pytest.raises(ConfigError, match="environment only"):
        parse_teacher_spec(f"name=x,base_url=http://127.0.0.1/v1,model=m,api_key={SECRET}")
    with pytest.raises(ConfigError, match="api_key_env: missing"):
        parse_teacher_spec("name=x,base_url=http://127.0.0.1/v1,model=m")
    with pytest.raises(ConfigError, match="base_url must be an http"):
        parse_teacher_spec("name=x,base_url=ftp://h,model=m,api_key_env=K")
    with pytest.raises(ConfigError, match="expected a number"):
        parse_teacher_spec("name=x,base_url=http://127.0.0.1/v1,model=m,api_key_env=K,price_input_per_mtok=free")
    with pytest.raises(ConfigError, match="unknown key"):
        parse_teacher_spec("name=x,base_url=http://127.0.0.1/v1,model=m,api_key_env=K,colour=red")


@pytest.mark.parametrize(
    "spec",
    [
        f"name=x,base_url=http://127.0.0.1/v1,model=m,api_key_env=K,{SECRET}",  # a bare part: not key=value
        f"name=x,base_url=http://127.0.0.1/v1,model=m,API-KEY={SECRET}",
        f"name=x,base_url=http://127.0.0.1/v1,model=m,api_key_env=K,apikey={SECRET}",  # an unknown key
        f"name=x,base_url={SECRET},model=m,api_key_env=K",  # an invalid URL, echoed by the validation
        f"name=x,base_url=http://127.0.0.1/v1,model=m,api_key_env=K,price_input_per_mtok={SECRET}",
    ],
)
def test_a_malformed_teacher_spec_never_echoes_a_typed_key(spec):
    with pytest.raises(ConfigError) as info:
        parse_teacher_spec(spec)
    assert "SECRET" not in str(info.value)


def test_shipped_config_builds_an_ensemble_with_a_cli_teacher():
    extra = parse_teacher_spec("name=local,base_url=http://127.0.0.1:8000/v1,model=smol,api_key_env=UNSET_LOCAL")
    ens = TeacherEnsemble.from_config(
        load_config().teachers,
        tokens_per_expansion=20,
        rng=random.Random(0),
        extra=[extra],
        env={"OPENROUTER_API_KEY": SECRET},
    )
    assert ens.names[-1] == "local" and len(ens.names) == 5
    asyncio.run(ens.aclose())


# --- the client against a fake server -----------------------------------------------------------------


def run(coro):
    return asyncio.run(coro)


def test_propose_records_teachers_merges_duplicates_and_drops_garbage():
    replies = iter(["3 + 4 = 7 eggs.\nmore", "3 +  4 = 7 eggs.", "", "***", "She has 7 eggs."] * 4)

    async def main():
        async with FakeOpenAIServer(lambda body: next(replies)) as fake:
            ens = ensemble([teacher("a", fake.base_url), teacher("b", fake.base_url)])
            async with ens:
                p = await ens.propose_detailed(Q, "", "right", 5)
            assert all(b["max_tokens"] == 20 and b["temperature"] == 0.7 for b in fake.bodies)
            assert all("n" not in b for b in fake.bodies)  # n requests, not the API's n>1
            return p, ens

    p, ens = run(main())
    assert (p.requested, p.answered, p.failed, p.dropped, p.merged) == (5, 5, 0, 2, 1)
    texts = {s.text: s for s in p.steps}
    assert set(texts) == {"3 + 4 = 7 eggs.", "She has 7 eggs."}
    merged = texts["3 + 4 = 7 eggs."]
    assert merged.count == 2 and merged.teacher == merged.teachers[0] and merged.direction == "right"
    assert all(t in ("a", "b") for s in p.steps for t in s.teachers)
    m = ens.metrics()
    assert (
        m["teachers/total/requests"] == 5 and m["teachers/total/dropped"] == 2 and m["teachers/total/duplicates"] == 1
    )
    assert m["teachers/total/tokens_in"] == 50 and m["teachers/total/tokens_out"] == 15


def test_retries_on_500_429_and_malformed_then_succeeds():
    script = iter(
        [Reply(status=500), Reply(status=429, headers={"retry-after": "0.2"}), Reply(raw_body=b'{"choices": [')]
    )

    async def main():
        async with (
            FakeOpenAIServer(lambda body: next(script, Reply("7 eggs"))) as fake,
            ensemble([teacher("a", fake.base_url)]) as ens,
        ):
            start = time.perf_counter()
            steps = await ens.propose(Q, "", "right", 1)
            return steps, time.perf_counter() - start, ens.metrics()

    steps, elapsed, m = run(main())
    assert [s.text for s in steps] == ["7 eggs"]
    assert (m["teachers/a/attempts"], m["teachers/a/retries"], m["teachers/a/successes"]) == (4, 3, 1)
    assert elapsed >= 0.2  # the Retry-After was honoured


def test_timeouts_and_exhausted_retries_are_failures_not_exceptions():
    cfg = replace(CLIENT, timeout_s=0.2, max_retries=1)

    async def main():
        async with (
            FakeOpenAIServer(lambda body: Reply(delay_s=1.0)) as fake,
            ensemble([teacher("a", fake.base_url)], client=cfg) as ens,
        ):
            p = await ens.propose_detailed(Q, "", "wrong", 2)
            with pytest.raises(ProposalFailed, match="timeout"):
                await ens.propose(Q, "", "wrong", 1)
            return p, ens.metrics()

    p, m = run(main())
    assert (p.answered, p.failed, p.steps) == (0, 2, ())
    assert "timeout" in p.errors[0]
    assert m["teachers/a/failures"] == 3 and m["teachers/a/retries"] == 3 and m["teachers/a/disabled"] == 0


def test_a_4xx_takes_the_teacher_out_and_the_others_carry_on(caplog):
    async def main():
        async with (
            FakeOpenAIServer(lambda body: Reply(status=404)) as bad,
            FakeOpenAIServer(lambda body: "7 eggs") as good,
            ensemble([teacher("bad", bad.base_url), teacher("good", good.base_url)], seed=1) as ens,
        ):
            p = await ens.propose_detailed(Q, "", "right", 6)
            return p, ens

    with caplog.at_level(logging.WARNING, logger="alphazero_llm"):
        p, ens = run(main())
    assert p.answered == 6 and p.failed == 0  # the bad teacher's requests went to the good one
    assert ens.client.available() == ["good"]
    assert "HTTP 404" in ens.client.disabled_reasons()["bad"]
    assert any("'bad' taken out of the run" in r.getMessage() for r in caplog.records)
    assert ens.metrics()["teachers/bad/disabled"] == 1.0


def test_when_no_teacher_is_left_the_error_is_clear():
    async def main():
        async with (
            FakeOpenAIServer(lambda body: Reply(status=401)) as fake,
            ensemble([teacher("a", fake.base_url), teacher("b", fake.base_url)]) as ens,
        ):
            with pytest.raises(NoTeacherAvailable, match=r"a: HTTP 401.*b: HTTP 401|b: HTTP 401.*a: HTTP 401"):
                await ens.propose(Q, "", "right", 3)
            with pytest.raises(NoTeacherAvailable):
                await ens.propose_detailed(Q, "", "right", 1)

    run(main())


def test_repeated_failures_take_a_dead_teacher_out():
    cfg = replace(CLIENT, max_retries=0, disable_after_failures=2)

    async def main():
        async with (
            FakeOpenAIServer(lambda body: Reply(status=503)) as fake,
            ensemble([teacher("a", fake.base_url)], client=cfg) as ens,
        ):
            p = await ens.propose_detailed(Q, "", "right", 1)
            assert p.failed == 1 and ens.client.available() == ["a"]
            with pytest.raises(NoTeacherAvailable, match="2 failed requests in a row, the last: HTTP 503"):
                await ens.propose_detailed(Q, "", "right", 1)

    run(main())


def test_global_concurrency_limit_and_provider_rate_limit():
    in_flight, peak = 0, 0

    def reply(body):
        return Reply("7", delay_s=0.1)

    class Counting(FakeOpenAIServer):
        async def handle(self, request, writer):
            nonlocal in_flight, peak
            in_flight += 1
            peak = max(peak, in_flight)
            try:
                return await super().handle(request, writer)
            finally:
                in_flight -= 1

    async def main(cfg, n):
        async with (
            Counting(reply) as fake,
            ensemble([teacher("a", fake.base_url), teacher("b", fake.base_url)], client=cfg) as ens,
        ):
            start = time.perf_counter()
            await ens.propose_detailed(Q, "", "right", n)
            return time.perf_counter() - start

    run(main(replace(CLIENT, max_concurrency=2), 6))
    assert peak == 2
    peak = 0
    limited = replace(CLIENT, rate_limits={"local": RateLimitConfig(requests_per_minute=600, burst=2)})
    elapsed = run(main(limited, 5))  # 2 at once, then one per 0.1 s
    assert elapsed >= 0.3
    assert peak <= 3


def test_the_key_is_in_no_log_metric_or_saved_file(caplog, tmp_path: Path):
    """Every path that could leak it: retries, timeouts, dropped connections, a 401 that quotes the key."""

    def upstream(body):
        if body["model"] == "m-quoter":
            return Reply(
                status=401, raw_body=json.dumps({"error": {"message": f"Incorrect API key {SECRET}"}}).encode()
            )
        return "7 eggs"

    async def main():
        async with FakeOpenAIServer(upstream) as fake:
            schedule = FaultSchedule(rate=0.5, seed=3)
            async with FaultProxy(fake.url, schedule, hang_s=1.0, retry_after_s=0) as proxy:
                cfg = replace(CLIENT, timeout_s=0.3)
                teachers = [teacher("a", proxy.base_url), teacher("quoter", fake.base_url)]
                async with ensemble(teachers, client=cfg) as ens:
                    for direction in ("right", "wrong"):
                        await ens.propose_detailed(Q, "3 + 4 = 7", direction, 6)
                    ens.update("a", 0.5)
                    return ens, dict(proxy.counts)

    with caplog.at_level(logging.DEBUG):
        ens, counts = run(main())
    assert counts.get("forwarded") and len(counts) > 2  # faults happened
    assert "quoter" in ens.client.disabled_reasons()
    (tmp_path / "bandit.json").write_text(json.dumps(ens.bandit.state_dict()))
    (tmp_path / "metrics.json").write_text(json.dumps(ens.metrics()))
    assert caplog.records
    for record in caplog.records:
        assert SECRET not in record.getMessage() and SECRET not in str(record.args)
    assert SECRET not in caplog.text
    for path in tmp_path.iterdir():
        assert SECRET not in path.read_text()
    assert SECRET not in json.dumps(ens.client.disabled_reasons())
