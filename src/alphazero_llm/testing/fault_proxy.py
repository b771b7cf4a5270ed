"""A fault-injecting HTTP proxy on 127.0.0.1, in front of a real (or fake) OpenAI-compatible server.

Each request, in arrival order, draws from a seeded schedule: with probability `rate` it gets
one of the faults below instead of the upstream's answer; otherwise it is forwarded (after
`latency_s`, for benchmarks) and the upstream's response is relayed.

- ``429``        Too Many Requests with ``Retry-After: retry_after_s``
- ``500``        Internal Server Error
- ``hang``       no answer for `hang_s` (set it past the client's timeout), then the connection closes
- ``malformed``  200 with a truncated JSON body
- ``drop``       the connection closes without an answer

The upstream must be on loopback: the proxy is test tooling and never reaches further.
"""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from dataclasses import dataclass
from typing import Self
from urllib.parse import urlsplit

import httpx

from alphazero_llm.testing.http import LOOPBACK, HttpServer, Request, json_response, response_bytes

FAULT_KINDS = ("429", "500", "hang", "malformed", "drop")
# Hop-by-hop headers and framing the proxy rewrites itself.
_SKIP_REQUEST = frozenset({"host", "connection", "keep-alive", "content-length", "transfer-encoding"})
_SKIP_RESPONSE = frozenset({"connection", "keep-alive", "content-length", "transfer-encoding", "content-encoding"})


@dataclass(frozen=True)
class FaultSchedule:
    rate: float = 0.0
    kinds: tuple[str, ...] = FAULT_KINDS
    seed: int = 0

    def __post_init__(self) -> None:
        if not 0.0 <= self.rate <= 1.0:
            raise ValueError("rate must be in [0, 1]")
        unknown = set(self.kinds) - set(FAULT_KINDS)
        if unknown or not self.kinds:
            raise ValueError(f"fault kinds must be a non-empty subset of {FAULT_KINDS}, got {self.kinds}")


class FaultProxy(HttpServer):
    def __init__(
        self,
        upstream: str,
        schedule: FaultSchedule | None = None,
        *,
        latency_s: float = 0.0,
        hang_s: float = 30.0,
        retry_after_s: int = 1,
    ) -> None:
        super().__init__()
        parts = urlsplit(upstream)
        if parts.hostname not in (LOOPBACK, "localhost"):
            raise ValueError(f"the fault proxy only forwards to loopback, not {parts.hostname!r}")
        self.upstream = f"{parts.scheme}://{parts.netloc}"
        self.upstream_path = parts.path.rstrip("/")
        self.schedule = schedule or FaultSchedule()
        self.latency_s = latency_s
        self.hang_s = hang_s
        self.retry_after_s = retry_after_s
        self.counts: Counter[str] = Counter()
        self._rng = random.Random(self.schedule.seed)
        self._http: httpx.AsyncClient | None = None

    @property
    def base_url(self) -> str:
        """The upstream's base URL (path included), as seen through the proxy."""
        return f"{self.url}{self.upstream_path}"

    def next_fault(self) -> str | None:
        # Two draws per request whatever the outcome, so the sequence depends only on the seed.
        hit, kind = self._rng.random() < self.schedule.rate, self._rng.choice(self.schedule.kinds)
        return kind if hit else None

    async def start(self) -> Self:
        # trust_env=False: no HTTP(S)_PROXY from the environment may route loopback traffic elsewhere.
        self._http = httpx.AsyncClient(base_url=self.upstream, timeout=httpx.Timeout(600.0), trust_env=False)
        return await super().start()

    async def stop(self) -> None:
        await super().stop()
        if self._http is not None:
            await self._http.aclose()
            self._http = None

    async def handle(self, request: Request, writer: asyncio.StreamWriter) -> bool:
        fault = self.next_fault()
        self.counts[fault or "forwarded"] += 1
        if fault == "429":
            body = {"error": {"message": "injected rate limit", "code": 429}}
            writer.write(json_response(429, body, {"retry-after": str(self.retry_after_s)}))
            return True
        if fault == "500":
            writer.write(json_response(500, {"error": {"message": "injected server error", "code": 500}}))
            return True
        if fault == "hang":
            await asyncio.sleep(self.hang_s)
            return False
        if fault == "malformed":
            writer.write(response_bytes(200, b'{"id": "chatcmpl-x", "object": "chat.completion", "choices": [{"ind'))
            return True
        if fault == "drop":
            return False
        if self.latency_s:
            await asyncio.sleep(self.latency_s)
        return await self._forward(request, writer)

    async def _forward(self, request: Request, writer: asyncio.StreamWriter) -> bool:
        assert self._http is not None, "proxy not started"
        headers = {k: v for k, v in request.headers.items() if k not in _SKIP_REQUEST}
        try:
            upstream = await self._http.request(request.method, request.path, headers=headers, content=request.body)
        except httpx.HTTPError as exc:
            self.counts["upstream_error"] += 1
            writer.write(json_response(502, {"error": {"message": f"upstream unreachable: {type(exc).__name__}"}}))
            return True
        out_headers = {k: v for k, v in upstream.headers.items() if k.lower() not in _SKIP_RESPONSE}
        writer.write(response_bytes(upstream.status_code, upstream.content, out_headers))
        return True
