"""A forwarded stream's wait for its node, and the dialects that keep a client company during
it: Anthropic's pings, and the Responses API's keepalives and in-stream failures."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncGenerator
from typing import Any

import pytest

from cluster.errors import InvalidRequest, NoCapacity
from cluster.gateway.anthropic import response as anthropic_response
from cluster.gateway.anthropic.stream import MessagesStreamEncoder
from cluster.gateway.forward import CONTEXT_LENGTH_EXCEEDED, ForwardEvent, Routed
from cluster.gateway.opening import Opening
from cluster.gateway.responses import response as responses_response
from cluster.gateway.responses.stream import ResponsesStreamEncoder
from cluster.types import NodeId
from node_agent.types import Delta, Finished, Usage

USAGE = Usage(
    prompt_tokens=9,
    completion_tokens=2,
    cached_prompt_tokens=4,
    ttft_seconds=0.1,
    decode_tokens_per_second=10.0,
    duration_seconds=0.2,
)


async def node(
    delay: float, error: Exception | None = None, closed: list[bool] | None = None
) -> AsyncGenerator[ForwardEvent, None]:
    """A forwarded stream whose node answers after `delay` seconds (or fails with `error`)."""
    try:
        await asyncio.sleep(delay)
        if error is not None:
            raise error
        yield Routed(NodeId("n1"), 1)
        yield Delta("Hi", 1, 9, 4)
        yield Delta(" there", 1)
        yield Finished("stop", USAGE)
    finally:
        if closed is not None:
            closed.append(True)


def events(frames: list[bytes]) -> list[tuple[str, dict[str, Any]]]:
    """Each SSE event's type and data; a comment line is (":", {})."""
    out: list[tuple[str, dict[str, Any]]] = []
    for block in b"".join(frames).decode().split("\n\n"):
        if block.startswith(":"):
            out.append((":", {}))
        elif block.startswith("event: "):
            kind, data = block.split("\n", 1)
            out.append((kind[7:], json.loads(data.removeprefix("data: "))))
    return out


def kinds(frames: list[bytes]) -> list[str]:
    """The event types of SSE frames; a comment line counts as ":"."""
    return [kind for kind, _ in events(frames)]


async def test_a_quick_node_is_routed_before_anything_is_sent() -> None:
    opening = Opening(node(0.0))
    routed = await opening.routed(1.0)
    assert routed == Routed(NodeId("n1"), 1)
    encoder = MessagesStreamEncoder(request_id="r", model="demo")
    frames = [f async for f in anthropic_response.sse_frames(opening, encoder, routed)]
    assert "ping" not in kinds(frames)
    start = events(frames)[0][1]
    assert start["message"]["usage"]["input_tokens"] == 5  # the node's counts: 9, 4 cached


async def test_a_slow_node_gets_the_stream_started_and_pings_until_it_answers(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(anthropic_response, "PING_EVERY_S", 0.02)
    opening = Opening(node(0.1))
    assert await opening.routed(0.01) is None
    encoder = MessagesStreamEncoder(request_id="r", model="demo")
    frames = [f async for f in anthropic_response.sse_frames(opening, encoder, None)]
    seen = kinds(frames)
    assert seen[0] == "message_start" and seen[1] == "ping"
    assert seen[-2:] == ["message_delta", "message_stop"] and "content_block_delta" in seen
    usage = events(frames)[-2][1]["usage"]
    assert (usage["input_tokens"], usage["cache_read_input_tokens"]) == (5, 4)


async def test_a_request_no_node_takes_after_the_start_ends_with_an_error_event() -> None:
    opening = Opening(node(0.05, NoCapacity("No node can serve `demo` right now.")))
    encoder = MessagesStreamEncoder(request_id="r", model="demo")
    frames = [f async for f in anthropic_response.sse_frames(opening, encoder, None)]
    assert kinds(frames)[0] == "message_start" and kinds(frames)[-1] == "error"
    assert b"overloaded_error" in frames[-1]


async def test_leaving_while_waiting_closes_the_node_stream() -> None:
    closed: list[bool] = []
    opening = Opening(node(10.0, closed=closed))
    assert await opening.routed(0.01) is None
    await opening.close()
    assert closed == [True]


async def test_responses_keep_a_silent_stream_alive_with_comments(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(responses_response, "KEEPALIVE_EVERY_S", 0.02)
    opening = Opening(node(0.1))
    encoder = ResponsesStreamEncoder(request_id="r", model="demo", created=1)
    frames = [f async for f in responses_response.sse_frames(opening, encoder)]
    seen = kinds(frames)
    assert seen[:3] == ["response.created", "response.in_progress", ":"]
    assert seen[-1] == "response.completed"


async def test_a_prompt_too_long_fails_a_response_stream_as_codex_reads_it() -> None:
    too_long = InvalidRequest("the prompt has 40000 tokens", code=CONTEXT_LENGTH_EXCEEDED)
    assert responses_response.fails_in_stream(too_long)
    assert not responses_response.fails_in_stream(InvalidRequest("bad"))
    opening = Opening(node(0.0, too_long))
    with pytest.raises(InvalidRequest):  # what the handler sees first, and reports in the stream
        await opening.routed(1.0)
    encoder = ResponsesStreamEncoder(request_id="r", model="demo", created=1)
    frames = [f async for f in responses_response.sse_frames(opening, encoder)]
    assert kinds(frames) == ["response.created", "response.in_progress", "response.failed"]
    failed = events(frames)[-1][1]
    assert failed["response"]["error"]["code"] == CONTEXT_LENGTH_EXCEEDED
