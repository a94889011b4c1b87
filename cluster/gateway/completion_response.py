"""A completion's HTTP response from its forwarder events: server-sent events or one JSON body."""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any

from starlette.responses import Response

from cluster.errors import UpstreamFailed
from cluster.gateway import front
from cluster.gateway.forward import ForwardEvent, StreamFailed
from cluster.gateway.openai_encode import (
    ChatStreamEncoder,
    CompletionStreamEncoder,
    chat_completion,
    dumps,
    text_completion,
)
from cluster.gateway.openai_parse import AnyRequest, ChatCompletionRequest
from node_agent.types import Delta, Finished

Answer = Response | front.EventStream  # a completion's answer: JSON, or a stream of events


async def sse_frames(
    req: AnyRequest, request_id: str, created: int, events: AsyncGenerator[ForwardEvent, None]
) -> AsyncIterator[bytes]:
    """The request's events as server-sent event frames, in the OpenAI API's chunks."""
    kind = ChatStreamEncoder if isinstance(req, ChatCompletionRequest) else CompletionStreamEncoder
    encoder = kind(
        request_id=request_id, model=req.model, created=created, include_usage=req.include_usage
    )
    try:
        async for event in events:
            if isinstance(event, Delta):
                if frame := encoder.delta(event):
                    yield frame
            elif isinstance(event, Finished):
                yield encoder.finish(event)
            elif isinstance(event, StreamFailed):
                yield encoder.fail(
                    UpstreamFailed(event.message), prompt_tokens=event.usage.prompt_tokens
                )
    finally:
        await events.aclose()  # the client left: cancel the generation on the node


async def collect(
    req: AnyRequest,
    request_id: str,
    created: int,
    events: AsyncGenerator[ForwardEvent, None],
    headers: dict[str, str],
) -> Response:
    """The request's events gathered into one OpenAI completion (a non-streamed answer)."""
    parts: list[str] = []
    try:
        async for event in events:
            if isinstance(event, Delta):
                parts.append(event.text)
            elif isinstance(event, StreamFailed):
                raise UpstreamFailed(event.message)
            elif isinstance(event, Finished):
                chat = isinstance(req, ChatCompletionRequest)
                build = chat_completion if chat else text_completion
                body = build(
                    request_id=request_id,
                    model=req.model,
                    created=created,
                    text="".join(parts),
                    finished=event,
                )
                return json_response(body, headers)
    finally:
        await events.aclose()
    raise UpstreamFailed("the node ended the generation without finishing it")


def json_response(body: Any, headers: dict[str, str] | None = None) -> Response:
    """`body` as a JSON response (the gateway's own encoder)."""
    return Response(dumps(body), media_type="application/json", headers=headers)
