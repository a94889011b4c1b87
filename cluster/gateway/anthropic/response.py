"""An Anthropic `/v1/messages` answer from its forwarded events: a stream, or one JSON body.

A stream whose node has not answered within OPEN_WITHIN_S starts anyway, with `message_start`,
and sends `ping` every PING_EVERY_S until the node does (a long prompt prefilling): clients
that give up on a silent connection stay, and a failure from then on is an `error` event.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from cluster.errors import UpstreamFailed
from cluster.gateway.anthropic.encode import Message, message_body
from cluster.gateway.anthropic.stream import MessagesStreamEncoder
from cluster.gateway.forward import Routed, StreamFailed
from cluster.gateway.front import EventStream
from cluster.gateway.openai.response import Answer, json_response
from cluster.gateway.opening import Opening, relay
from node_agent.types import Finished

OPEN_WITHIN_S = 1.0
PING_EVERY_S = 5.0


async def answer(opening: Opening, request_id: str, model: str, stream: bool) -> Answer:
    """The message as a stream (started once a node answers, or after OPEN_WITHIN_S) or as one
    JSON body; an ApiError before anything was sent is raised, for the HTTP error."""
    headers = {"x-meterless-request-id": request_id}
    try:
        routed = await opening.routed(OPEN_WITHIN_S if stream else None)
        if routed is not None:
            headers["x-meterless-node"] = routed.node_id
        if stream:
            encoder = MessagesStreamEncoder(request_id=request_id, model=model)
            return EventStream(sse_frames(opening, encoder, routed), headers)
        return json_response(await collect(opening, request_id, model), headers)
    except BaseException:
        await opening.close()
        raise


def sse_frames(
    opening: Opening, encoder: MessagesStreamEncoder, routed: Routed | None
) -> AsyncIterator[bytes]:
    """The message's events as Anthropic's server-sent events; `routed`: None while the node
    has not answered yet (the stream starts now, and pings until it does)."""
    started = encoder.start() if routed is None else b""
    return relay(opening, encoder, preamble=started, keepalive=encoder.ping, every_s=PING_EVERY_S)


async def collect(opening: Opening, request_id: str, model: str) -> dict[str, Any]:
    """The whole message, once its node has finished it (a non-streamed answer)."""
    message = Message()
    try:
        async for event in opening.events:
            if isinstance(event, StreamFailed):
                raise UpstreamFailed(event.message)
            if isinstance(event, Finished):
                message.finished = event
                return message_body(request_id, model, message)
            if not isinstance(event, Routed):
                message.add(event)
    finally:
        await opening.close()
    raise UpstreamFailed("the node ended the generation without finishing it")
