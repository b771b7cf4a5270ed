"""`transformers serve`, with its chat streams ended by OpenAI's `data: [DONE]` event.

    python -m alphazero_llm.transformers_serve serve MODEL_DIR --host 127.0.0.1 --port 8000 ...

`transformers serve` (5.24 and 5.25) ends a streamed chat completion after its last chunk, without the
`data: [DONE]` line that OpenAI's API, vLLM and llama.cpp send. verifiers 0.4 streams every request and
refuses a stream without it ("upstream stream ended before its terminal event"), so `LocalServer` runs
transformers' own CLI through this module, which appends that one event to each chat stream and changes
nothing else.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

DONE_EVENT = "data: [DONE]\n\n"


async def with_done(events: AsyncIterator[Any]) -> AsyncIterator[Any]:
    """`events`, then OpenAI's terminal event."""
    async for event in events:
        yield event
    yield DONE_EVENT


def end_streams_with_done() -> None:
    """Wrap transformers' chat streaming so that every stream ends with `data: [DONE]`."""
    from transformers.cli.serving.chat_completion import ChatCompletionHandler

    streaming = ChatCompletionHandler._streaming

    def _streaming(self, *args: Any, **kwargs: Any):
        response = streaming(self, *args, **kwargs)
        response.body_iterator = with_done(response.body_iterator)
        return response

    ChatCompletionHandler._streaming = _streaming


def main() -> None:
    from transformers.cli.transformers import main as transformers_main

    end_streams_with_done()
    transformers_main()


if __name__ == "__main__":
    main()
