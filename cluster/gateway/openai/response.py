"""A completion's HTTP response from its forwarder events: server-sent events or one JSON body.

The events are one generation's (choice 0), or with `n` > 1 every choice's, each a `Sampled`
that names its choice (cluster/gateway/choices.py).
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any

from starlette.responses import Response

from cluster.errors import UpstreamFailed
from cluster.gateway import front
from cluster.gateway.choices import Sampled
from cluster.gateway.forward import ForwardEvent, Routed, StreamFailed
from cluster.gateway.openai.encode import Choice, chat_completion, dumps, text_completion
from cluster.gateway.openai.parse import AnyRequest, ChatCompletionRequest
from cluster.gateway.openai.stream import ChatStreamEncoder, CompletionStreamEncoder
from node_agent.types import Finished

Answer = Response | front.EventStream  # a completion's answer: JSON, or a stream of events
Events = AsyncGenerator[ForwardEvent, None] | AsyncGenerator[Sampled, None]


async def sse_frames(
    req: AnyRequest, request_id: str, created: int, events: Events
) -> AsyncIterator[bytes]:
    """The request's events as server-sent event frames, in the OpenAI API's chunks."""
    kind = ChatStreamEncoder if isinstance(req, ChatCompletionRequest) else CompletionStreamEncoder
    encoder = kind(
        request_id=request_id,
        model=req.model,
        created=created,
        include_usage=req.include_usage,
        choices=req.choices,
    )
    try:
        async for item in events:
            index, event = (item.index, item.event) if isinstance(item, Sampled) else (0, item)
            if isinstance(event, StreamFailed):  # one choice failing ends them all
                usage = event.usage
                yield encoder.fail(
                    UpstreamFailed(event.message),
                    prompt_tokens=usage.prompt_tokens,
                    cached_tokens=usage.cached_prompt_tokens,
                )
                return
            if not isinstance(event, Routed) and (frame := encoder.event(event, index)):
                yield frame
    finally:
        await events.aclose()  # the client left: cancel the generations on the nodes


async def collect(
    req: AnyRequest, request_id: str, created: int, events: Events, headers: dict[str, str]
) -> Response:
    """The request's events gathered into one OpenAI completion (a non-streamed answer)."""
    choices = [Choice() for _ in range(req.choices)]
    left = len(choices)
    try:
        async for item in events:
            index, event = (item.index, item.event) if isinstance(item, Sampled) else (0, item)
            choice = choices[index]
            if isinstance(event, Finished):
                if choice.finished is None:
                    choice.finished, left = event, left - 1
                if not left:
                    return json_response(_body(req, request_id, created, choices), headers)
            elif isinstance(event, StreamFailed):
                raise UpstreamFailed(event.message)
            elif not isinstance(event, Routed):
                choice.add(event)
    finally:
        await events.aclose()
    raise UpstreamFailed("the node ended the generation without finishing it")


def _body(req: AnyRequest, request_id: str, created: int, choices: list[Choice]) -> dict[str, Any]:
    build = chat_completion if isinstance(req, ChatCompletionRequest) else text_completion
    logprobs = req.logprob_alternatives is not None
    return build(
        request_id=request_id, model=req.model, created=created, choices=choices, logprobs=logprobs
    )


def json_response(body: Any, headers: dict[str, str] | None = None) -> Response:
    """`body` as a JSON response (the gateway's own encoder)."""
    return Response(dumps(body), media_type="application/json", headers=headers)
