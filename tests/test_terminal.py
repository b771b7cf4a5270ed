"""TerminalChecker: final-answer markers decide at once; the optional LLM check is cached and counted."""

from __future__ import annotations

import asyncio
import random

import pytest

from alphazero_llm.config import TeacherClientConfig, TeacherModelConfig, TerminalCheckerConfig, load_config
from alphazero_llm.models.keys import MissingApiKeyError
from alphazero_llm.models.teacher_client import TeacherClient
from alphazero_llm.models.terminal import TerminalChecker, has_final_answer
from alphazero_llm.testing.fake_openai import FakeOpenAIServer, Reply

Q = "Janet has 3 eggs and buys 4 more. How many eggs does she have?"
CLIENT = TeacherClientConfig(
    timeout_s=2.0, local_timeout_s=2.0, max_retries=2, backoff_base_s=0.01, backoff_max_s=0.05, max_retry_after_s=1.0,
    max_concurrency=4, disable_after_failures=0, temperature=0.7, rate_limits={},
)  # fmt: skip


@pytest.mark.parametrize(
    ("solution", "terminal"),
    [
        ("3 + 4 = 7\n#### 7", True),
        ("So the answer is $\\boxed{7}$.", True),
        ("3 + 4 = 7", False),
        ("#### Step 2: add", False),  # a markdown heading, not a marker
        ("", False),
    ],
)
def test_rules(solution, terminal):
    assert has_final_answer(solution) is terminal


def checker_config(base_url: str, use_llm: bool = True) -> TerminalCheckerConfig:
    model = TeacherModelConfig("judge", "local", "judge-model", base_url, "JUDGE_KEY")
    return TerminalCheckerConfig(use_llm=use_llm, max_tokens=4, model=model)


def test_without_llm_undecided_is_not_terminal_and_no_request_is_made():
    checker = TerminalChecker(checker_config("http://127.0.0.1:9/v1", use_llm=False))
    assert asyncio.run(checker.is_terminal(Q, "3 + 4 = 7")) is False
    assert asyncio.run(checker.is_terminal(Q, "#### 7")) is True
    assert checker.metrics() == {
        "terminal/checks": 2.0, "terminal/rule_terminal": 1.0, "terminal/cache_hits": 0.0,
        "terminal/llm_calls": 0.0, "terminal/llm_undecided": 0.0,
    }  # fmt: skip


def test_shipped_checker_config_needs_its_key_only_when_used():
    cfg = load_config().teachers.terminal_checker
    client = TeacherClient(CLIENT, random.Random(0))
    TerminalChecker(cfg, client, env={})  # use_llm is false by default: no key needed
    with pytest.raises(MissingApiKeyError, match=cfg.model.api_key_env):
        TerminalChecker(TerminalCheckerConfig(True, cfg.max_tokens, cfg.model), client, env={})


def test_llm_check_is_cached_and_counted_in_the_shared_accounting():
    def reply(body):
        assert body["temperature"] == 0.0 and body["max_tokens"] == 4
        text = body["messages"][-1]["content"]
        if "unclear" in text:
            return "perhaps"
        if "fails" in text:
            return Reply(status=500)
        return "YES" if "seven" in text else "No."

    async def main():
        async with FakeOpenAIServer(reply) as fake:
            client = TeacherClient(CLIENT, random.Random(0))
            checker = TerminalChecker(checker_config(fake.base_url), client, env={"JUDGE_KEY": "k"})
            results = [
                await checker.is_terminal(Q, "She has seven eggs."),
                await checker.is_terminal(Q, "She  has seven eggs. "),  # same after whitespace: cached
                await checker.is_terminal(Q, "3 + 4"),
                await checker.is_terminal(Q, "#### 7"),  # rules: no request
                await checker.is_terminal(Q, "unclear"),
                await checker.is_terminal(Q, "it fails"),
            ]
            await client.aclose()
            return results, checker.metrics(), client.accounting.metrics(), len(fake.bodies)

    results, metrics, accounting, requests = asyncio.run(main())
    assert results == [True, True, False, True, False, False]
    assert metrics["terminal/cache_hits"] == 1 and metrics["terminal/llm_calls"] == 4
    assert metrics["terminal/llm_undecided"] == 2
    assert accounting["teachers/judge/requests"] == 4 and accounting["teachers/judge/failures"] == 1
    assert accounting["teachers/judge/tokens_in"] > 0
    assert requests == 3 + 1 + CLIENT.max_retries  # the 500 was retried
