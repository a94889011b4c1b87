"""Streamed responses (gateway/responses/stream.py): the event sequences, frame by frame, and the
official `openai` SDK reading them, both as typed events and through its `responses.stream`
accumulator."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx2
import openai
import pytest
from openai.types.responses import (
    ResponseCompletedEvent,
    ResponseFailedEvent,
    ResponseStreamEvent,
    ResponseTextDeltaEvent,
)
from pydantic import TypeAdapter

from cluster.errors import InvalidRequest, UpstreamFailed
from cluster.gateway.responses.stream import ResponsesStreamEncoder
from node_agent.types import (
    Delta,
    Finished,
    GenerateEvent,
    ReasoningDelta,
    TokenLogprob,
    ToolCallDelta,
    Usage,
)

USAGE = Usage(
    prompt_tokens=20,
    completion_tokens=9,
    cached_prompt_tokens=16,
    ttft_seconds=0.01,
    decode_tokens_per_second=50.0,
    duration_seconds=0.2,
    reasoning_tokens=3,
)
TEXT: list[GenerateEvent] = [
    Delta("Hello", 1, prompt_tokens=20, cached_prompt_tokens=16),
    Delta(", world", 2),
    Finished("stop", USAGE),
]
THINKING: list[GenerateEvent] = [
    ReasoningDelta("Greet ", 2, prompt_tokens=20),
    ReasoningDelta("them.", 1),
    Delta("\n\n", 1),
    *TEXT,
]
CALL: list[GenerateEvent] = [
    ToolCallDelta(index=0, id="call_a", name="get_weather", tokens=1, prompt_tokens=20),
    ToolCallDelta(index=0, arguments='{"city": ', tokens=2),
    ToolCallDelta(index=0, arguments='"Oslo"}', tokens=2),
    ToolCallDelta(index=0, done=True),
    Finished("tool_calls", USAGE),
]
PATCH_INPUT = "*** Begin Patch\n*** End Patch"
CUSTOM_CALL: list[GenerateEvent] = [
    ToolCallDelta(index=0, id="call_p", name="apply_patch", tokens=1, prompt_tokens=20),
    ToolCallDelta(index=0, arguments='{"input": ', tokens=1),
    ToolCallDelta(index=0, arguments=json.dumps(PATCH_INPUT) + "}", tokens=5),
    ToolCallDelta(index=0, done=True),
    Finished("tool_calls", USAGE),
]
CUT: list[GenerateEvent] = [Delta("Once upon", 2, prompt_tokens=20), Finished("length", USAGE)]

START = ["response.created", "response.in_progress"]
TEXT_ITEM = [
    "response.output_item.added",
    "response.content_part.added",
    "response.output_text.delta",
    "response.output_text.delta",
    "response.output_text.done",
    "response.content_part.done",
    "response.output_item.done",
]
REASONING_ITEM = [
    "response.output_item.added",
    "response.content_part.added",
    "response.reasoning_text.delta",
    "response.reasoning_text.delta",
    "response.reasoning_text.done",
    "response.content_part.done",
    "response.output_item.done",
]
EVENT = TypeAdapter[Any](ResponseStreamEvent)


def encoder(**kwargs: Any) -> ResponsesStreamEncoder:
    return ResponsesStreamEncoder(request_id="r1", model="demo", created=7, **kwargs)


def frames(events: list[GenerateEvent], **kwargs: Any) -> bytes:
    enc = encoder(**kwargs)
    return enc.start() + b"".join(enc.event(e) for e in events)


def payloads(raw: bytes) -> list[dict[str, Any]]:
    """Each frame's data, checked against its `event:` line."""
    out = []
    for frame in raw.decode().split("\n\n")[:-1]:
        event, data = frame.split("\n")
        payload = json.loads(data.removeprefix("data: "))
        assert event == f"event: {payload['type']}"
        out.append(payload)
    assert [p["sequence_number"] for p in out] == list(range(len(out)))
    return out


def types(raw: bytes) -> list[str]:
    return [p["type"] for p in payloads(raw)]


def test_text_only() -> None:
    raw = frames(TEXT)
    assert types(raw) == [*START, *TEXT_ITEM, "response.completed"]
    events = payloads(raw)
    assert events[0]["response"]["status"] == "in_progress"
    assert events[0]["response"]["output"] == [] and events[0]["response"]["usage"] is None
    assert events[2]["item"] == {
        "type": "message",
        "id": "msg_r1_0",
        "status": "in_progress",
        "role": "assistant",
        "content": [],
    }
    assert events[3]["part"] == {
        "type": "output_text",
        "text": "",
        "annotations": [],
        "logprobs": [],
    }
    assert events[4] == {
        "type": "response.output_text.delta",
        "sequence_number": 4,
        "item_id": "msg_r1_0",
        "output_index": 0,
        "content_index": 0,
        "delta": "Hello",
        "logprobs": [],
    }
    assert events[6]["text"] == "Hello, world"
    assert events[8]["item"]["status"] == "completed"
    done = events[-1]["response"]
    assert done["status"] == "completed" and done["output"] == [events[8]["item"]]
    assert done["usage"]["input_tokens_details"]["cached_tokens"] == 16
    for payload in events:
        EVENT.validate_python(payload)  # each one valid for the SDK's models, strictly


def test_reasoning_then_text() -> None:
    raw = frames(THINKING)
    assert types(raw) == [*START, *REASONING_ITEM, *TEXT_ITEM, "response.completed"]
    events = payloads(raw)
    assert events[2]["item"] == {"type": "reasoning", "id": "rs_r1_0", "summary": [], "content": []}
    assert events[4]["delta"] == "Greet " and events[4]["content_index"] == 0
    assert events[6]["text"] == "Greet them."
    assert events[8]["item"]["content"] == [{"type": "reasoning_text", "text": "Greet them."}]
    assert events[9]["output_index"] == 1  # the newlines between opened nothing
    assert events[-1]["response"]["usage"]["output_tokens_details"] == {"reasoning_tokens": 3}
    for payload in events:
        EVENT.validate_python(payload)


def test_a_function_call() -> None:
    raw = frames(CALL)
    assert types(raw) == [
        *START,
        "response.output_item.added",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.done",
        "response.output_item.done",
        "response.completed",
    ]
    events = payloads(raw)
    assert events[2]["item"] == {
        "type": "function_call",
        "id": "fc_r1_0",
        "call_id": "call_a",
        "name": "get_weather",
        "arguments": "",
        "status": "in_progress",
    }
    assert events[3] == {
        "type": "response.function_call_arguments.delta",
        "sequence_number": 3,
        "item_id": "fc_r1_0",
        "output_index": 0,
        "delta": '{"city": ',
    }
    assert events[5]["arguments"] == '{"city": "Oslo"}'
    assert events[6]["item"]["arguments"] == '{"city": "Oslo"}'
    assert events[6]["item"]["status"] == "completed"
    for payload in events:
        EVENT.validate_python(payload)


def test_a_custom_tool_call_goes_out_whole_when_done() -> None:
    raw = frames(CUSTOM_CALL, custom_tools=frozenset({"apply_patch"}))
    assert types(raw) == [
        *START,
        "response.output_item.added",
        "response.custom_tool_call_input.delta",
        "response.custom_tool_call_input.done",
        "response.output_item.done",
        "response.completed",
    ]
    events = payloads(raw)
    assert events[2]["item"] == {
        "type": "custom_tool_call",
        "id": "ctc_r1_0",
        "call_id": "call_p",
        "name": "apply_patch",
        "input": "",
    }
    assert events[3]["delta"] == events[4]["input"] == PATCH_INPUT
    assert events[5]["item"]["input"] == PATCH_INPUT
    for payload in events:
        EVENT.validate_python(payload)


def test_a_call_after_text_closes_the_message_first() -> None:
    events = [Delta("Checking.", 1, prompt_tokens=20), Delta("\n", 1), *CALL]
    kinds = types(frames(events))
    assert kinds.index("response.output_item.done") < kinds.index(
        "response.function_call_arguments.delta"
    )
    assert kinds.count("response.output_item.added") == 2


def test_whitespace_held_back_goes_out_with_the_text_after_it() -> None:
    events = [Delta("Hello", 1), Delta(" ", 1), Delta("world", 1), Delta("\n", 1), *TEXT[-1:]]
    sent = payloads(frames(events))
    deltas = [e["delta"] for e in sent if e["type"] == "response.output_text.delta"]
    assert deltas == ["Hello", " world"]
    assert sent[-1]["response"]["output"][0]["content"][0]["text"] == "Hello world"


def test_incomplete_by_length() -> None:
    raw = frames(CUT)
    assert types(raw)[-2:] == ["response.output_item.done", "response.incomplete"]
    events = payloads(raw)
    assert events[-2]["item"]["status"] == "incomplete"
    ended = events[-1]["response"]
    assert ended["status"] == "incomplete"
    assert ended["incomplete_details"] == {"reason": "max_output_tokens"}
    for payload in events:
        EVENT.validate_python(payload)


def test_failed_mid_stream() -> None:
    enc = encoder()
    started = enc.start() + b"".join(enc.event(e) for e in TEXT[:2])
    ended = enc.fail(UpstreamFailed("node lost"), "server_error")
    events = payloads(started + ended)
    assert events[-1]["type"] == "response.failed"
    failed = events[-1]["response"]
    assert failed["status"] == "failed"
    assert failed["error"] == {"code": "server_error", "message": "node lost"}
    assert failed["output"][0]["status"] == "incomplete"
    assert failed["usage"]["output_tokens"] == 3
    EVENT.validate_python(events[-1])
    assert enc.event(TEXT[-1]) == b"" and enc.fail(UpstreamFailed("again")) == b""


def test_failed_before_anything_starts_the_stream_and_says_why() -> None:
    error = InvalidRequest("the prompt has 9000 tokens; the model takes 8192")
    events = payloads(encoder().fail(error, "context_length_exceeded"))
    assert [e["type"] for e in events] == [*START, "response.failed"]
    assert events[-1]["response"]["error"]["code"] == "context_length_exceeded"
    default = payloads(encoder().fail(UpstreamFailed("gone")))[-1]
    assert default["response"]["error"]["code"] == "upstream_failed"


def test_logprobs_ride_on_the_text_deltas() -> None:
    token = TokenLogprob("Hi", -0.25, b"Hi")
    events = payloads(frames([Delta("Hi", 1, logprobs=(token,)), Finished("stop", USAGE)]))
    expected = [{"token": "Hi", "logprob": -0.25, "bytes": [72, 105], "top_logprobs": []}]
    assert events[4]["logprobs"] == events[5]["logprobs"] == expected
    EVENT.validate_python(events[4])


# --- the official SDK reading the stream -------------------------------------------------------


@contextmanager
def client(body: bytes) -> Iterator[openai.OpenAI]:
    def answer(request: httpx2.Request) -> httpx2.Response:
        assert request.url.path == "/v1/responses"
        return httpx2.Response(200, headers={"content-type": "text/event-stream"}, content=body)

    with httpx2.Client(transport=httpx2.MockTransport(answer)) as http:
        yield openai.OpenAI(
            api_key="x", base_url="http://head.test/v1", http_client=http, max_retries=0
        )


def everything() -> list[GenerateEvent]:
    """Reasoning, text, a function call and a custom tool call, in one response."""
    custom = [
        ToolCallDelta(index=1, id=e.id, name=e.name, arguments=e.arguments, done=e.done)
        for e in CUSTOM_CALL
        if isinstance(e, ToolCallDelta)
    ]
    return [*THINKING[:-1], *CALL[:-1], *custom, Finished("tool_calls", USAGE)]


def test_the_sdk_parses_every_event_into_its_type() -> None:
    body = frames(everything(), custom_tools=frozenset({"apply_patch"}))
    with client(body) as api:
        events = list(api.responses.create(model="demo", input="Hi", stream=True))
    assert [e.type for e in events] == types(body)
    assert all(type(e).__name__.startswith("Response") for e in events)  # typed, not dicts
    assert isinstance(events[-1], ResponseCompletedEvent)
    assert [i.type for i in events[-1].response.output] == [
        "reasoning",
        "message",
        "function_call",
        "custom_tool_call",
    ]
    deltas = [e.delta for e in events if isinstance(e, ResponseTextDeltaEvent)]
    assert "".join(deltas) == events[-1].response.output_text == "Hello, world"


def test_the_sdk_stream_helper_assembles_the_response() -> None:
    body = frames(everything(), custom_tools=frozenset({"apply_patch"}))
    with client(body) as api, api.responses.stream(model="demo", input="Hi") as stream:
        snapshots = [e.snapshot for e in stream if e.type == "response.output_text.delta"]
        final = stream.get_final_response()
    assert snapshots == ["Hello", "Hello, world"]
    assert final.output_text == "Hello, world" and final.id == "resp_r1"
    call, custom = final.output[2:]
    assert call.type == "function_call" and call.arguments == '{"city": "Oslo"}'
    assert custom.type == "custom_tool_call" and custom.input == PATCH_INPUT
    assert final.usage is not None and final.usage.output_tokens_details.reasoning_tokens == 3


def test_the_sdk_sees_a_failed_stream() -> None:
    enc = encoder()
    body = enc.start() + enc.event(TEXT[0]) + enc.fail(UpstreamFailed("lost"), "server_error")
    with client(body) as api:
        events = list(api.responses.create(model="demo", input="Hi", stream=True))
    assert isinstance(events[-1], ResponseFailedEvent)
    assert events[-1].response.error is not None
    assert events[-1].response.error.message == "lost"


@pytest.mark.parametrize("events", [TEXT, THINKING, CALL, CUT])
def test_the_sdk_stream_helper_takes_every_ending(events: list[GenerateEvent]) -> None:
    with (
        client(frames(events)) as api,
        api.responses.stream(model="demo", input="Hi") as stream,
    ):
        last = [e.type for e in stream][-1]
        if events is CUT:  # the helper's final response comes only with response.completed
            assert last == "response.incomplete"
        else:
            assert stream.get_final_response().status == "completed"
