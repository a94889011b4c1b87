"""Whole answers in the Anthropic Messages wire format (gateway/anthropic/encode.py): error
bodies, stop reasons, usage, gathered messages and the model list, each also read back by the
official `anthropic` SDK."""

from __future__ import annotations

import anthropic
import pytest
from anthropic.types import MessageParam

from cluster.errors import (
    ApiError,
    Forbidden,
    InternalError,
    InvalidRequest,
    ModelNotFound,
    NoCapacity,
    RateLimited,
    Unauthorized,
    UpstreamFailed,
    UpstreamTimeout,
)
from cluster.gateway.anthropic.encode import (
    Message,
    error_body,
    error_type,
    message_body,
    model_list,
    stop_reason,
    tool_input,
    usage,
)
from cluster.gateway.anthropic.parse import parse_messages, to_generate_request
from cluster.gateway.openai.encode import dumps
from node_agent.types import (
    ChatMessage,
    Delta,
    Finished,
    ReasoningDelta,
    TokenEvent,
    ToolCall,
    ToolCallDelta,
    Usage,
)
from tests.unit.gateway.anthropic.sdk import client

HI: MessageParam = {"role": "user", "content": "hi"}
USAGE = Usage(
    prompt_tokens=20,
    completion_tokens=12,
    cached_prompt_tokens=16,
    ttft_seconds=0.01,
    decode_tokens_per_second=50.0,
    duration_seconds=0.2,
    reasoning_tokens=4,
)


@pytest.mark.parametrize(
    ("error", "kind"),
    [
        (InvalidRequest("bad"), "invalid_request_error"),
        (Unauthorized("who"), "authentication_error"),
        (Forbidden("no"), "permission_error"),
        (ModelNotFound("none"), "not_found_error"),
        (RateLimited("slow down"), "rate_limit_error"),
        (InternalError("bug"), "api_error"),
        (UpstreamFailed("node lost"), "api_error"),
        (NoCapacity("full"), "overloaded_error"),
        (UpstreamTimeout("late"), "timeout_error"),
    ],
)
def test_error_bodies_carry_anthropics_types(error: ApiError, kind: str) -> None:
    assert error_body(error) == {"type": "error", "error": {"type": kind, "message": error.message}}


def test_statuses_without_a_type_of_their_own() -> None:
    assert error_type(413) == "request_too_large"
    assert error_type(405) == "invalid_request_error"
    assert error_type(501) == "api_error"


def test_the_sdk_raises_the_right_error_from_a_body() -> None:
    error = NoCapacity("every node is busy")
    with client(dumps(error_body(error)), "json", status=503) as api:
        with pytest.raises(anthropic.InternalServerError) as info:
            api.messages.create(model="demo", max_tokens=5, messages=[HI])
    assert info.value.body == error_body(error)
    assert "every node is busy" in str(info.value)


@pytest.mark.parametrize(
    ("finished", "expected"),
    [
        (Finished("stop", USAGE), ("end_turn", None)),
        (Finished("length", USAGE), ("max_tokens", None)),
        (Finished("tool_calls", USAGE), ("tool_use", None)),
        (Finished("cancelled", USAGE), ("end_turn", None)),
        (Finished("stop", USAGE, "END"), ("stop_sequence", "END")),
    ],
)
def test_stop_reasons(finished: Finished, expected: tuple[str, str | None]) -> None:
    assert stop_reason(finished) == expected


def test_usage_splits_the_prompt_into_cached_and_not() -> None:
    assert usage(20, 16, 12) == {
        "input_tokens": 4,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 16,
        "output_tokens": 12,
    }


def test_tool_input_is_an_object_or_empty() -> None:
    assert tool_input('{"path": "a.py"}') == {"path": "a.py"}
    assert tool_input("") == {}
    assert tool_input('{"path": ') == {}
    assert tool_input("[1]") == {}


ANSWER: list[TokenEvent] = [
    ReasoningDelta("The user wants ", 2, prompt_tokens=20, cached_prompt_tokens=16),
    ReasoningDelta("a file.", 2),
    Delta("", 0),
    Delta("Reading ", 1),
    Delta("it.", 1),
    ToolCallDelta(index=0, id="call_1", name="Read", tokens=1),
    ToolCallDelta(index=0, arguments='{"path": ', tokens=2),
    ToolCallDelta(index=0, arguments='"a.py"}', tokens=2),
    ToolCallDelta(index=0, done=True),
    ToolCallDelta(index=1, id="call_2", name="Now", tokens=1),
    ToolCallDelta(index=1, done=True),
]
CONTENT = [
    {"type": "thinking", "thinking": "The user wants a file.", "signature": ""},
    {"type": "text", "text": "Reading it."},
    {"type": "tool_use", "id": "call_1", "name": "Read", "input": {"path": "a.py"}},
    {"type": "tool_use", "id": "call_2", "name": "Now", "input": {}},
]


def gathered(events: list[TokenEvent], finished: Finished) -> Message:
    message = Message()
    for event in events:
        message.add(event)
    message.finished = finished
    return message


def test_a_message_gathers_blocks_in_order() -> None:
    body = message_body("r1", "demo", gathered(ANSWER, Finished("tool_calls", USAGE)))
    assert body == {
        "id": "msg_r1",
        "type": "message",
        "role": "assistant",
        "model": "demo",
        "content": CONTENT,
        "stop_reason": "tool_use",
        "stop_sequence": None,
        "usage": usage(20, 16, 12),
    }


def test_text_after_a_call_opens_a_block_of_its_own() -> None:
    events: list[TokenEvent] = [
        Delta("a", 1),
        ToolCallDelta(index=0, id="c", name="f"),
        Delta("b", 1),
    ]
    content = gathered(events, Finished("stop", USAGE)).content()
    assert [b["type"] for b in content] == ["text", "tool_use", "text"]


def test_an_unfinished_message_has_no_body() -> None:
    with pytest.raises(ValueError, match="not finished"):
        message_body("r1", "demo", Message())


def test_the_sdk_reads_a_whole_message() -> None:
    body = message_body("r1", "demo", gathered(ANSWER, Finished("tool_calls", USAGE)))
    with client(dumps(body), "json") as api:
        message = api.messages.create(model="demo", max_tokens=64, messages=[HI])
    assert [block.to_dict() for block in message.content] == CONTENT
    assert message.stop_reason == "tool_use" and message.id == "msg_r1"
    assert (message.usage.input_tokens, message.usage.cache_read_input_tokens) == (4, 16)
    assert message.usage.output_tokens == 12
    # What the client sends back next turn is what the gateway reads, calls and reasoning kept.
    sent: list[bytes] = []
    turns: list[MessageParam] = [HI, message.to_param(), {"role": "user", "content": "go"}]
    with client(dumps(body), "json", sent=sent) as api:
        api.messages.create(model="demo", max_tokens=64, messages=turns)
    (_, back, _) = to_generate_request(parse_messages(sent[0]), "r2").messages or ()
    assert back == ChatMessage(
        "assistant",
        "Reading it.",
        tool_calls=(
            ToolCall(id="call_1", name="Read", arguments='{"path": "a.py"}'),
            ToolCall(id="call_2", name="Now", arguments="{}"),
        ),
        reasoning="The user wants a file.",
    )


def test_the_sdk_reads_a_stop_sequence() -> None:
    body = message_body("r1", "demo", gathered([Delta("a", 1)], Finished("stop", USAGE, "END")))
    with client(dumps(body), "json") as api:
        message = api.messages.create(model="demo", max_tokens=64, messages=[HI])
    assert (message.stop_reason, message.stop_sequence) == ("stop_sequence", "END")


def test_the_model_list_is_anthropics() -> None:
    body = model_list(["claude-local", "demo"], created=1_767_225_600)
    assert body == {
        "data": [
            {
                "type": "model",
                "id": "claude-local",
                "display_name": "claude-local",
                "created_at": "2026-01-01T00:00:00Z",
            },
            {
                "type": "model",
                "id": "demo",
                "display_name": "demo",
                "created_at": "2026-01-01T00:00:00Z",
            },
        ],
        "has_more": False,
        "first_id": "claude-local",
        "last_id": "demo",
    }
    assert model_list([], created=0) == {
        "data": [],
        "has_more": False,
        "first_id": None,
        "last_id": None,
    }
    with client(dumps(body), "json") as api:
        models = api.models.list()
    assert [(m.id, m.created_at.year) for m in models] == [("claude-local", 2026), ("demo", 2026)]
