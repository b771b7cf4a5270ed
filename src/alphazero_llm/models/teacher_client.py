"""Talking to teachers: a resilient async client for OpenAI-compatible APIs (keys: `models.keys`).

- `TeacherClient`: one `openai.AsyncOpenAI` per endpoint with the SDK's own retries off
  (`max_retries=0`), so that the policy here is the only one: a global concurrency limit, a
  token bucket per provider, timeouts, exponential backoff with jitter on 429/5xx/timeouts/
  dropped connections/malformed bodies, honouring Retry-After; any other 4xx takes the
  teacher out of the run. It never raises for a failed request: it returns a `Failure`.
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
import random
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import openai
from openai.types.chat import ChatCompletion

from alphazero_llm.config import RateLimitConfig, TeacherClientConfig, TeacherModelConfig
from alphazero_llm.models.accounting import Accounting
from alphazero_llm.models.keys import LOOPBACK_PLACEHOLDER_KEY, TeacherError
from alphazero_llm.models.prompts import Message

logger = logging.getLogger(__name__)

# Status codes worth retrying: the request may succeed later. Any other 4xx will not.
RETRYABLE_STATUS = frozenset({408, 409, 429})


class NoTeacherAvailable(TeacherError):
    """Every teacher has been taken out of the run; the message gives each one's reason."""


class ProposalFailed(TeacherError):
    """Every request of one `propose` call failed (transiently); the message gives the reasons."""


# --- retry policy (pure) --------------------------------------------------------------------------


def parse_retry_after(headers: Mapping[str, str]) -> float | None:
    """Seconds to wait from `retry-after-ms` (OpenAI) or `Retry-After` (seconds or an HTTP date)."""
    ms = headers.get("retry-after-ms")
    if ms is not None:
        try:
            return max(float(ms) / 1000.0, 0.0)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(float(value), 0.0)
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(when.timestamp() - time.time(), 0.0)


def backoff_delay(
    attempt: int, cfg: TeacherClientConfig, rng: random.Random, retry_after: float | None
) -> float | None:
    """Seconds before retry number `attempt + 1`; None when the server asks for longer than we wait.

    Without Retry-After: "equal jitter", half of min(max, base * 2^attempt) plus a uniform
    draw over the other half, so that clients that failed together do not retry together.
    """
    if retry_after is not None:
        return None if retry_after > cfg.max_retry_after_s else retry_after
    cap = min(cfg.backoff_max_s, cfg.backoff_base_s * 2.0**attempt)
    return cap / 2 + rng.uniform(0.0, cap / 2)


class TokenBucket:
    """`rate` requests per second sustained, `capacity` at once. Waiters are served in turn."""

    def __init__(self, limit: RateLimitConfig) -> None:
        self.rate = limit.requests_per_minute / 60.0
        self.capacity = float(limit.burst)
        self._tokens = self.capacity
        self._stamp = time.monotonic()
        self._lock = asyncio.Lock()

    async def acquire(self) -> None:
        async with self._lock:
            while True:
                now = time.monotonic()
                self._tokens = min(self.capacity, self._tokens + (now - self._stamp) * self.rate)
                self._stamp = now
                if self._tokens >= 1.0:
                    self._tokens -= 1.0
                    return
                await asyncio.sleep((1.0 - self._tokens) / self.rate)


# --- the client -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Completion:
    teacher: str
    text: str | None
    finish_reason: str | None


@dataclass(frozen=True)
class Failure:
    teacher: str
    reason: str
    fatal: bool  # the teacher is out of the run


@dataclass
class _Endpoint:
    config: TeacherModelConfig
    client: openai.AsyncOpenAI
    key: str
    disabled_reason: str | None = None
    failures_in_a_row: int = 0


class TeacherClient:
    """Resilient chat completions for several endpoints under one concurrency limit and per-provider rate limits."""

    def __init__(self, config: TeacherClientConfig, rng: random.Random, accounting: Accounting | None = None) -> None:
        self.config = config
        self.rng = rng
        self.accounting = Accounting() if accounting is None else accounting
        self._endpoints: dict[str, _Endpoint] = {}
        self._semaphore = asyncio.Semaphore(config.max_concurrency)
        self._buckets = {provider: TokenBucket(limit) for provider, limit in config.rate_limits.items()}

    def add(self, teacher: TeacherModelConfig, api_key: str) -> None:
        if teacher.name in self._endpoints:
            raise ValueError(f"teacher {teacher.name!r} added twice")
        client = openai.AsyncOpenAI(
            base_url=teacher.base_url,
            api_key=api_key,
            max_retries=0,  # the retry policy is ours (backoff, Retry-After, taking teachers out)
            timeout=self.config.timeout_s,  # a number: openai's own HTTP client (httpx, or httpx2 from 3.0) reads it
        )
        self._endpoints[teacher.name] = _Endpoint(teacher, client, api_key)
        self.accounting.register(teacher)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self._endpoints)

    def available(self, names: Sequence[str] | None = None) -> list[str]:
        names = self.names if names is None else names
        return [n for n in names if self._endpoints[n].disabled_reason is None]

    def disabled_reasons(self) -> dict[str, str]:
        return {n: e.disabled_reason for n, e in self._endpoints.items() if e.disabled_reason is not None}

    def _redact(self, text: str) -> str:
        # Error bodies may quote the key back (OpenAI's 401 does, partly masked); never pass it on.
        for endpoint in self._endpoints.values():
            if endpoint.key and endpoint.key != LOOPBACK_PLACEHOLDER_KEY:
                text = text.replace(endpoint.key, "***")
        return text

    def _disable(self, name: str, reason: str) -> None:
        endpoint = self._endpoints[name]
        if endpoint.disabled_reason is None:
            endpoint.disabled_reason = reason
            self.accounting.stats(name).disabled = 1
            logger.warning("Teacher %r taken out of the run: %s", name, reason)

    async def complete(
        self, name: str, messages: list[Message], max_tokens: int, temperature: float | None = None
    ) -> Completion | Failure:
        """One chat completion from teacher `name`, retried per the policy. Never raises for a failed request."""
        endpoint = self._endpoints[name]
        stats = self.accounting.stats(name)
        stats.requests += 1
        temperature = self.config.temperature if temperature is None else temperature
        reason = "not attempted"
        for attempt in range(self.config.max_retries + 1):
            if endpoint.disabled_reason is not None:
                stats.failures += 1
                return Failure(name, endpoint.disabled_reason, fatal=True)
            if attempt:
                stats.retries += 1
            bucket = self._buckets.get(endpoint.config.provider)
            if bucket is not None:
                await bucket.acquire()
            retry_after: float | None = None
            async with self._semaphore:
                stats.attempts += 1
                try:
                    response = await endpoint.client.chat.completions.create(
                        model=endpoint.config.model,
                        messages=messages,  # type: ignore[arg-type]
                        max_tokens=max_tokens,
                        temperature=temperature,
                    )
                    completion = self._read(name, response)
                except openai.APIStatusError as exc:
                    status = exc.status_code
                    if status in RETRYABLE_STATUS or status >= 500:
                        reason, retry_after = f"HTTP {status}", parse_retry_after(exc.response.headers)
                    else:
                        self._disable(name, self._redact(f"HTTP {status}: {exc.message}")[:300])
                        stats.failures += 1
                        return Failure(name, endpoint.disabled_reason or "", fatal=True)
                except openai.APITimeoutError:
                    reason = f"timeout after {self.config.timeout_s:g}s"
                except openai.APIConnectionError as exc:
                    reason = f"connection error ({type(exc.__cause__).__name__ if exc.__cause__ else 'unknown'})"
                except (openai.APIResponseValidationError, ValueError, AttributeError, TypeError) as exc:
                    # A 200 whose body is not JSON or not a chat completion (a broken proxy, a truncated reply).
                    reason = f"malformed response ({type(exc).__name__})"
                else:
                    stats.successes += 1
                    endpoint.failures_in_a_row = 0
                    return completion
            if attempt == self.config.max_retries:
                break
            delay = backoff_delay(attempt, self.config, self.rng, retry_after)
            if delay is None:
                reason += f" with Retry-After {retry_after:g}s, longer than max_retry_after_s"
                break
            logger.debug("Teacher %r: %s; retry %d in %.2fs", name, reason, attempt + 1, delay)
            await asyncio.sleep(delay)  # outside the semaphore: a waiting retry holds no slot
        stats.failures += 1
        endpoint.failures_in_a_row += 1
        limit = self.config.disable_after_failures
        if limit and endpoint.failures_in_a_row >= limit:
            self._disable(name, f"{endpoint.failures_in_a_row} failed requests in a row, the last: {reason}")
        logger.info("Teacher %r request failed after %d attempt(s): %s", name, attempt + 1, reason)
        return Failure(name, reason, fatal=endpoint.disabled_reason is not None)

    def _read(self, name: str, response: object) -> Completion:
        if not isinstance(response, ChatCompletion):
            raise TypeError(f"expected a ChatCompletion, got {type(response).__name__}")
        if not response.choices:
            raise ValueError("a completion without choices")
        usage = response.usage
        if usage is not None:
            stats = self.accounting.stats(name)
            stats.tokens_in += int(usage.prompt_tokens or 0)
            stats.tokens_out += int(usage.completion_tokens or 0)
        choice = response.choices[0]
        return Completion(name, choice.message.content, choice.finish_reason)

    async def aclose(self) -> None:
        for endpoint in self._endpoints.values():
            await endpoint.client.close()
