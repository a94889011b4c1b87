"""A `/v1/responses` answer from its forwarded events: a stream, or one JSON body.

A stream whose node has not answered within OPEN_WITHIN_S starts anyway (`response.created`,
`response.in_progress`) and sends an SSE comment every KEEPALIVE_EVERY_S until the node does:
Codex gives up on a stream that stays silent. A prompt too long for the model fails a stream
as Codex reads it, with `response.failed` and `context_length_exceeded`; other errors before
the first token are HTTP errors while nothing has been sent, `response.failed` after.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from cluster.errors import ApiError, UpstreamFailed
from cluster.gateway.forward import CONTEXT_LENGTH_EXCEEDED, Routed, StreamFailed
from cluster.gateway.front import EventStream
from cluster.gateway.openai.response import Answer, json_response
from cluster.gateway.opening import Opening, relay
from cluster.gateway.responses.encode import Output, response_body
from cluster.gateway.responses.parse import ResponsesRequest
from cluster.gateway.responses.stream import ResponsesStreamEncoder
from node_agent.types import Finished

OPEN_WITHIN_S = 1.0
KEEPALIVE_EVERY_S = 5.0
KEEPALIVE = b": keepalive\n\n"  # a comment line: every SSE reader skips it


def fails_in_stream(error: ApiError) -> bool:
    """Whether a streamed response reports `error` as `response.failed` rather than as an
    HTTP error (what Codex expects of a prompt that does not fit)."""
    return error.code == CONTEXT_LENGTH_EXCEEDED


async def answer(opening: Opening, req: ResponsesRequest, request_id: str, created: int) -> Answer:
    """The response as a stream (started once a node answers, or after OPEN_WITHIN_S) or as
    one JSON body; an ApiError before anything was sent is raised, for the HTTP error, except
    a prompt too long for a stream (fails_in_stream)."""
    headers = {"x-meterless-request-id": request_id}
    whole: dict[str, Any] = {
        "request_id": request_id,
        "model": req.model,
        "created": created,
        "echo": req.echo(),
    }
    try:
        if not req.stream:
            await opening.routed()
            output = Output(request_id, req.custom_tools)
            return json_response(await collect(opening, output, whole), headers)
        try:
            routed = await opening.routed(OPEN_WITHIN_S)
        except ApiError as exc:
            if not fails_in_stream(exc):
                raise
            routed = None  # the stream reports it: the wait raises it again
        if routed is not None:
            headers["x-meterless-node"] = routed.node_id
        encoder = ResponsesStreamEncoder(**whole, custom_tools=req.custom_tools)
        return EventStream(sse_frames(opening, encoder), headers)
    except BaseException:
        await opening.close()
        raise


def sse_frames(opening: Opening, encoder: ResponsesStreamEncoder) -> AsyncIterator[bytes]:
    """The response's events as server-sent events, started now (`response.created`), with
    keepalives until the node answers; an error that ended the request before any node took
    it (the wait raises it again) is reported in the stream, as `response.failed`."""
    return relay(
        opening,
        encoder,
        preamble=encoder.start(),
        keepalive=lambda: KEEPALIVE,
        every_s=KEEPALIVE_EVERY_S,
    )


async def collect(opening: Opening, output: Output, body: dict[str, Any]) -> dict[str, Any]:
    """The whole response once its node has finished it; `body`: response_body's arguments
    but the output."""
    try:
        async for event in opening.events:
            if isinstance(event, StreamFailed):
                raise UpstreamFailed(event.message)
            if not isinstance(event, Routed):
                output.add(event)
            if isinstance(event, Finished):
                return response_body(output=output, **body)
    finally:
        await opening.close()
    raise UpstreamFailed("the node ended the generation without finishing it")
