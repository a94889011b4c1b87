"""Streamed answers in the Anthropic Messages wire format (gateway/anthropic/stream.py): golden
streams event by event, and the same streams put back together by the official `anthropic`
SDK's own accumulator (`messages.stream(...).get_final_message()`)."""

from __future__ import annotations

import json
from typing import Any

import anthropic
import pytest
from anthropic.types import Message as SdkMessage

from cluster.errors import NoCapacity, UpstreamFailed
from cluster.gateway.anthropic.encode import error_body
from cluster.gateway.anthropic.stream import MessagesStreamEncoder
from node_agent.types import (
    Delta,
    Finished,
    GenerateEvent,
    ReasoningDelta,
    ToolCallDelta,
    Usage,
)
from tests.unit.gateway.anthropic.sdk import client

Event = tuple[str, dict[str, Any]]


def finished_usage(completion: int) -> Usage:
    return Usage(
        prompt_tokens=20,
        completion_tokens=completion,
        cached_prompt_tokens=16,
        ttft_seconds=0.01,
        decode_tokens_per_second=50.0,
        duration_seconds=0.2,
    )


def encoded(events: list[GenerateEvent], *, early_start: bool = False) -> bytes:
    encoder = MessagesStreamEncoder(request_id="r1", model="demo")
    head = encoder.start() + encoder.ping() if early_start else b""
    return head + b"".join(encoder.event(e) for e in events)


def parsed(raw: bytes) -> list[Event]:
    """Each frame as (event type, payload); the payload's own type always matches."""
    assert raw.endswith(b"\n\n")
    out = []
    for frame in raw.decode("ascii").split("\n\n")[:-1]:
        kind, data = frame.split("\n")
        payload = json.loads(data.removeprefix("data: "))
        assert kind == f"event: {payload['type']}"
        out.append((payload["type"], payload))
    return out


def message_start(input_tokens: int = 4, cached: int = 16) -> Event:
    message: dict[str, Any] = {
        "id": "msg_r1",
        "type": "message",
        "role": "assistant",
        "model": "demo",
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
        "usage": usage(input_tokens, cached, 0),
    }
    return "message_start", {"type": "message_start", "message": message}


def usage(input_tokens: int, cached: int, output: int) -> dict[str, int]:
    return {
        "input_tokens": input_tokens,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": cached,
        "output_tokens": output,
    }


def block_start(index: int, block: dict[str, Any]) -> Event:
    return "content_block_start", {
        "type": "content_block_start",
        "index": index,
        "content_block": block,
    }


def delta(index: int, kind: str, **fields: str) -> Event:
    body = {"type": "content_block_delta", "index": index, "delta": {"type": kind, **fields}}
    return "content_block_delta", body


def block_stop(index: int) -> Event:
    return "content_block_stop", {"type": "content_block_stop", "index": index}


def ending(reason: str, output: int, sequence: str | None = None) -> list[Event]:
    message_delta = {
        "type": "message_delta",
        "delta": {"stop_reason": reason, "stop_sequence": sequence},
        "usage": usage(4, 16, output),
    }
    return [("message_delta", message_delta), ("message_stop", {"type": "message_stop"})]


TEXT = {"type": "text", "text": ""}
THINKING = {"type": "thinking", "thinking": "", "signature": ""}


def final(raw: bytes) -> SdkMessage:
    """The SDK's own assembly of a streamed message."""
    with (
        client(raw) as api,
        api.messages.stream(
            model="demo", max_tokens=64, messages=[{"role": "user", "content": "hi"}]
        ) as stream,
    ):
        for _ in stream:
            pass
        return stream.get_final_message()


def summary(message: SdkMessage) -> tuple[Any, ...]:
    u = message.usage
    counts = (
        u.input_tokens,
        u.cache_read_input_tokens,
        u.cache_creation_input_tokens,
        u.output_tokens,
    )
    content = [block.to_dict() for block in message.content]
    return content, message.stop_reason, message.stop_sequence, counts


# --- golden streams ----------------------------------------------------------------------------

TEXT_ONLY: list[GenerateEvent] = [
    Delta("Hel", 1, prompt_tokens=20, cached_prompt_tokens=16),
    Delta("", 1),
    Delta('lo "you"', 1),
    Finished("stop", finished_usage(3)),
]


def test_text_only() -> None:
    raw = encoded(TEXT_ONLY)
    assert parsed(raw) == [
        message_start(),
        block_start(0, TEXT),
        delta(0, "text_delta", text="Hel"),
        delta(0, "text_delta", text='lo "you"'),
        block_stop(0),
        *ending("end_turn", 3),
    ]
    assert summary(final(raw)) == (
        [{"type": "text", "text": 'Hello "you"'}],
        "end_turn",
        None,
        (4, 16, 0, 3),
    )


THINKING_THEN_TEXT: list[GenerateEvent] = [
    ReasoningDelta("Greet ", 2, prompt_tokens=20, cached_prompt_tokens=16),
    ReasoningDelta("é.", 1),
    Delta("Hi", 1),
    Finished("stop", finished_usage(4)),
]


def test_thinking_then_text() -> None:
    raw = encoded(THINKING_THEN_TEXT)
    assert parsed(raw) == [
        message_start(),
        block_start(0, THINKING),
        delta(0, "thinking_delta", thinking="Greet "),
        delta(0, "thinking_delta", thinking="é."),
        block_stop(0),
        block_start(1, TEXT),
        delta(1, "text_delta", text="Hi"),
        block_stop(1),
        *ending("end_turn", 4),
    ]
    assert summary(final(raw))[0] == [
        {"type": "thinking", "thinking": "Greet é.", "signature": ""},
        {"type": "text", "text": "Hi"},
    ]


TWO_CALLS: list[GenerateEvent] = [
    Delta("Reading both.", 3, prompt_tokens=20, cached_prompt_tokens=16),
    ToolCallDelta(index=0, id="call_1", name="Read", tokens=1),
    ToolCallDelta(index=0, arguments='{"path": ', tokens=2),
    ToolCallDelta(index=0, arguments='"a.py"}', tokens=2),
    ToolCallDelta(index=0, done=True),
    ToolCallDelta(index=1, id="call_2", name="Read", tokens=1),
    ToolCallDelta(index=1, arguments='{"path": "b.py"}', tokens=3),
    ToolCallDelta(index=1, done=True),
    Finished("tool_calls", finished_usage(12)),
]


def test_text_then_two_tool_calls() -> None:
    raw = encoded(TWO_CALLS)
    assert parsed(raw) == [
        message_start(),
        block_start(0, TEXT),
        delta(0, "text_delta", text="Reading both."),
        block_stop(0),
        block_start(1, {"type": "tool_use", "id": "call_1", "name": "Read", "input": {}}),
        delta(1, "input_json_delta", partial_json='{"path": '),
        delta(1, "input_json_delta", partial_json='"a.py"}'),
        block_stop(1),
        block_start(2, {"type": "tool_use", "id": "call_2", "name": "Read", "input": {}}),
        delta(2, "input_json_delta", partial_json='{"path": "b.py"}'),
        block_stop(2),
        *ending("tool_use", 12),
    ]
    assert summary(final(raw)) == (
        [
            {"type": "text", "text": "Reading both."},
            {"type": "tool_use", "id": "call_1", "name": "Read", "input": {"path": "a.py"}},
            {"type": "tool_use", "id": "call_2", "name": "Read", "input": {"path": "b.py"}},
        ],
        "tool_use",
        None,
        (4, 16, 0, 12),
    )


def test_a_call_without_arguments_or_end_closes_at_the_finish() -> None:
    events: list[GenerateEvent] = [
        ToolCallDelta(index=0, id="call_1", name="Now", prompt_tokens=20, cached_prompt_tokens=16),
        Finished("tool_calls", finished_usage(1)),
    ]
    raw = encoded(events)
    assert parsed(raw)[1:] == [
        block_start(0, {"type": "tool_use", "id": "call_1", "name": "Now", "input": {}}),
        block_stop(0),
        *ending("tool_use", 1),
    ]
    assert summary(final(raw))[0] == [
        {"type": "tool_use", "id": "call_1", "name": "Now", "input": {}}
    ]


def test_max_tokens() -> None:
    events: list[GenerateEvent] = [
        Delta("Once upon", 2, prompt_tokens=20, cached_prompt_tokens=16),
        Finished("length", finished_usage(2)),
    ]
    raw = encoded(events)
    assert parsed(raw)[-2:] == ending("max_tokens", 2)
    assert summary(final(raw))[1:] == ("max_tokens", None, (4, 16, 0, 2))


def test_stop_sequence() -> None:
    events: list[GenerateEvent] = [
        Delta("one, two", 3, prompt_tokens=20, cached_prompt_tokens=16),
        Finished("stop", finished_usage(4), "three"),
    ]
    raw = encoded(events)
    assert parsed(raw)[-2:] == ending("stop_sequence", 4, "three")
    assert summary(final(raw))[1:] == ("stop_sequence", "three", (4, 16, 0, 4))


def test_an_empty_answer_has_no_blocks() -> None:
    raw = encoded(
        [
            Delta("", 1, prompt_tokens=20, cached_prompt_tokens=16),
            Finished("stop", finished_usage(1)),
        ]
    )
    assert parsed(raw) == [message_start(), *ending("end_turn", 1)]
    assert summary(final(raw))[0] == []


def test_a_start_before_the_node_answers_carries_the_counts_later() -> None:
    raw = encoded(TEXT_ONLY, early_start=True)
    events = parsed(raw)
    assert events[:2] == [message_start(0, 0), ("ping", {"type": "ping"})]
    assert events[2:] == parsed(encoded(TEXT_ONLY))[1:]
    assert events[-2][1]["usage"] == usage(4, 16, 3)
    # The SDK takes message_delta's cumulative counts over message_start's.
    assert summary(final(raw))[3] == (4, 16, 0, 3)


def test_nothing_follows_the_end() -> None:
    encoder = MessagesStreamEncoder(request_id="r1", model="demo")
    for event in TEXT_ONLY:
        encoder.event(event)
    assert encoder.event(Delta("late", 1)) == b""
    assert encoder.event(Finished("stop", finished_usage(3))) == b""


# --- failures ----------------------------------------------------------------------------------


def test_a_failure_mid_stream_ends_with_an_error_event() -> None:
    encoder = MessagesStreamEncoder(request_id="r1", model="demo")
    started = b"".join(encoder.event(e) for e in TWO_CALLS[:3])
    ended = encoder.fail(UpstreamFailed("node lost"))
    assert parsed(started + ended) == [
        message_start(),
        block_start(0, TEXT),
        delta(0, "text_delta", text="Reading both."),
        block_stop(0),
        block_start(1, {"type": "tool_use", "id": "call_1", "name": "Read", "input": {}}),
        delta(1, "input_json_delta", partial_json='{"path": '),
        ("error", {"type": "error", "error": {"type": "api_error", "message": "node lost"}}),
    ]
    assert encoder.event(TWO_CALLS[3]) == b""
    with pytest.raises(anthropic.APIStatusError, match="node lost") as info:
        final(started + ended)
    assert info.value.body == error_body(UpstreamFailed("node lost"))


def test_an_overload_before_any_token_is_an_overloaded_error() -> None:
    encoder = MessagesStreamEncoder(request_id="r1", model="demo")
    raw = encoder.start() + encoder.fail(NoCapacity("every node is busy"))
    assert parsed(raw)[-1][1]["error"]["type"] == "overloaded_error"
    with pytest.raises(anthropic.APIStatusError, match="every node is busy"):
        final(raw)
