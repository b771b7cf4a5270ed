"""A fake OpenAI-compatible chat server on 127.0.0.1, for fast tests of the client logic.

`reply(body) -> str | Reply` decides each answer: a string is the assistant's content; a
`Reply` can also set the status, headers, usage or a raw body. It never looks at headers,
so a key sent to it is not stored anywhere.
"""

from __future__ import annotations

import asyncio
import itertools
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from alphazero_llm.testing.http import HttpServer, Request, json_response, response_bytes


@dataclass(frozen=True)
class Reply:
    content: str | None = "a step"
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    prompt_tokens: int = 10
    completion_tokens: int = 3
    raw_body: bytes | None = None  # sent as is instead of a chat completion
    delay_s: float = 0.0


def chat_completion(content: str | None, model: str, prompt_tokens: int, completion_tokens: int, n: int) -> dict:
    return {
        "id": f"chatcmpl-{n}",
        "object": "chat.completion",
        "created": 0,
        "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        },
    }


class FakeOpenAIServer(HttpServer):
    def __init__(self, reply: Callable[[dict[str, Any]], str | Reply] | None = None, latency_s: float = 0.0) -> None:
        super().__init__()
        self.reply = reply if reply is not None else (lambda body: Reply())
        self.latency_s = latency_s
        self.bodies: list[dict[str, Any]] = []
        self._ids = itertools.count()

    @property
    def base_url(self) -> str:
        return f"{self.url}/v1"

    async def handle(self, request: Request, writer: asyncio.StreamWriter) -> bool:
        if request.path.rstrip("/").endswith("/models"):
            writer.write(json_response(200, {"object": "list", "data": [{"id": "fake", "object": "model"}]}))
            return True
        if not request.path.rstrip("/").endswith("/chat/completions"):
            writer.write(json_response(404, {"error": {"message": f"no route {request.path}"}}))
            return True
        body = json.loads(request.body)
        self.bodies.append(body)
        reply = self.reply(body)
        reply = Reply(content=reply) if isinstance(reply, str) else reply
        if self.latency_s or reply.delay_s:
            await asyncio.sleep(self.latency_s + reply.delay_s)
        if reply.raw_body is not None:
            writer.write(response_bytes(reply.status, reply.raw_body, reply.headers))
        elif reply.status != 200:
            payload = {"error": {"message": f"fake error {reply.status}", "code": reply.status}}
            writer.write(json_response(reply.status, payload, reply.headers))
        else:
            payload = chat_completion(
                reply.content, body.get("model", "fake"), reply.prompt_tokens, reply.completion_tokens, next(self._ids)
            )
            writer.write(json_response(200, payload, reply.headers))
        return True
