"""Whole Responses bodies (gateway/responses/encode.py): output items in the order they began,
usage, incomplete and failed responses, and the official `openai` SDK reading the body."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx2
import openai
from openai.types.responses import Response

from cluster.gateway.openai.encode import dumps
from cluster.gateway.responses.encode import Output, failed_body, response_body
from cluster.gateway.responses.parse import parse_response_request
from node_agent.types import (
    Delta,
    Finished,
    GenerateEvent,
    ReasoningDelta,
    TokenLogprob,
    ToolCallDelta,
    TopLogprob,
    Usage,
)

USAGE = Usage(
    prompt_tokens=20,
    completion_tokens=12,
    cached_prompt_tokens=16,
    ttft_seconds=0.01,
    decode_tokens_per_second=50.0,
    duration_seconds=0.2,
    reasoning_tokens=4,
)
EVENTS: list[GenerateEvent] = [
    ReasoningDelta("Weather ", 2, prompt_tokens=20, cached_prompt_tokens=16),
    ReasoningDelta("wanted.", 2),
    Delta("Let me ", 2),
    Delta("check.", 1),
    Delta("\n\n", 1),  # between the text and the call: no message of its own
    ToolCallDelta(index=0, id="call_a", name="get_weather", tokens=1),
    ToolCallDelta(index=0, arguments='{"city": ', tokens=2),
    ToolCallDelta(index=0, arguments='"Oslo"}', tokens=2),
    ToolCallDelta(index=0, done=True),
    ToolCallDelta(index=1, id="call_b", name="apply_patch", tokens=1),
    ToolCallDelta(index=1, arguments='{"input": "*** Begin Patch\\n"}', tokens=1),
    ToolCallDelta(index=1, done=True),
    Finished("tool_calls", USAGE),
]
CUSTOM = frozenset({"apply_patch"})


def gathered(events: list[GenerateEvent], custom: frozenset[str] = CUSTOM) -> Output:
    output = Output("r1", custom)
    for event in events:
        output.add(event)
    return output


def body(events: list[GenerateEvent], **echo: Any) -> dict[str, Any]:
    return response_body(
        request_id="r1", model="demo", created=7, output=gathered(events), echo=echo or None
    )


def test_items_in_the_order_they_began() -> None:
    out = body(EVENTS)["output"]
    assert out == [
        {
            "type": "reasoning",
            "id": "rs_r1_0",
            "summary": [],
            "content": [{"type": "reasoning_text", "text": "Weather wanted."}],
        },
        {
            "type": "message",
            "id": "msg_r1_1",
            "status": "completed",
            "role": "assistant",
            "content": [
                {"type": "output_text", "text": "Let me check.", "annotations": [], "logprobs": []}
            ],
        },
        {
            "type": "function_call",
            "id": "fc_r1_2",
            "call_id": "call_a",
            "name": "get_weather",
            "arguments": '{"city": "Oslo"}',
            "status": "completed",
        },
        {
            "type": "custom_tool_call",
            "id": "ctc_r1_3",
            "call_id": "call_b",
            "name": "apply_patch",
            "input": "*** Begin Patch\n",
        },
    ]


def test_the_response_object_and_its_usage() -> None:
    whole = body(EVENTS)
    assert {k: whole[k] for k in ("id", "object", "created_at", "status", "model")} == {
        "id": "resp_r1",
        "object": "response",
        "created_at": 7,
        "status": "completed",
        "model": "demo",
    }
    assert whole["error"] is None and whole["incomplete_details"] is None
    assert whole["usage"] == {
        "input_tokens": 20,
        "input_tokens_details": {"cached_tokens": 16, "cache_write_tokens": 0},
        "output_tokens": 12,
        "output_tokens_details": {"reasoning_tokens": 4},
        "total_tokens": 32,
    }
    assert whole["store"] is False and whole["tools"] == [] and whole["tool_choice"] == "auto"
    Response.model_validate(whole)  # the SDK's model, validated strictly


def test_the_request_settings_are_echoed() -> None:
    req = parse_response_request(
        json.dumps(
            {
                "model": "demo",
                "input": "Hi",
                "instructions": "Be brief.",
                "tools": [{"type": "function", "name": "f"}, {"type": "custom", "name": "p"}],
                "tool_choice": "required",
                "temperature": 0.2,
                "text": {"format": {"type": "json_object"}},
                "reasoning": {"effort": "low"},
            }
        )
    )
    whole = body(EVENTS, **req.echo())
    assert whole["instructions"] == "Be brief." and whole["tool_choice"] == "required"
    assert [t["type"] for t in whole["tools"]] == ["function", "custom"]
    assert whole["temperature"] == 0.2 and whole["text"] == {"format": {"type": "json_object"}}
    Response.model_validate(whole)


def test_running_out_of_tokens_is_incomplete() -> None:
    cut = body([Delta("Once upon", 2, prompt_tokens=3), Finished("length", USAGE)])
    assert cut["status"] == "incomplete"
    assert cut["incomplete_details"] == {"reason": "max_output_tokens"}
    assert cut["output"][0]["status"] == "incomplete"
    Response.model_validate(cut)


def test_a_custom_call_the_model_wrote_without_json_keeps_its_text() -> None:
    events: list[GenerateEvent] = [
        ToolCallDelta(index=0, id="c", name="apply_patch", arguments="*** Begin Patch", done=True),
        Finished("tool_calls", USAGE),
    ]
    assert body(events)["output"][0]["input"] == "*** Begin Patch"


def test_calls_without_ids_get_one_and_logprobs_keep_their_bytes() -> None:
    top = (TopLogprob("Hi", -0.1, b"Hi"), TopLogprob("Hey", -2.5))
    events: list[GenerateEvent] = [
        Delta("Hi", 1, logprobs=(TokenLogprob("Hi", -0.1, b"Hi", top),)),
        ToolCallDelta(index=0, name="f", arguments="{}"),
        Finished("tool_calls", USAGE),
    ]
    message, call = body(events)["output"]
    assert message["content"][0]["logprobs"] == [
        {
            "token": "Hi",
            "logprob": -0.1,
            "bytes": [72, 105],
            "top_logprobs": [
                {"token": "Hi", "logprob": -0.1, "bytes": [72, 105]},
                {"token": "Hey", "logprob": -2.5, "bytes": [72, 101, 121]},
            ],
        }
    ]
    assert call["call_id"] == "call_r1_1" and call["status"] == "completed"


def test_a_failure_carries_the_output_and_usage_so_far() -> None:
    failed = failed_body(
        request_id="r1",
        model="demo",
        created=7,
        output=gathered(EVENTS[:7]),
        code="context_length_exceeded",
        message="too long",
    )
    assert failed["status"] == "failed"
    assert failed["error"] == {"code": "context_length_exceeded", "message": "too long"}
    assert [i.get("status") for i in failed["output"]] == [None, "completed", "incomplete"]
    assert failed["usage"]["input_tokens"] == 20 and failed["usage"]["output_tokens"] == 11
    assert failed["usage"]["output_tokens_details"] == {"reasoning_tokens": 4}


@contextmanager
def client(answer: bytes, content_type: str = "application/json") -> Iterator[openai.OpenAI]:
    """The official SDK, talking to a transport that answers every request with `answer`."""

    def reply(request: httpx2.Request) -> httpx2.Response:
        assert request.url.path == "/v1/responses"
        return httpx2.Response(200, headers={"content-type": content_type}, content=answer)

    with httpx2.Client(transport=httpx2.MockTransport(reply)) as http:
        yield openai.OpenAI(
            api_key="x", base_url="http://head.test/v1", http_client=http, max_retries=0
        )


def test_the_sdk_reads_a_whole_response() -> None:
    with client(dumps(body(EVENTS))) as api:
        response = api.responses.create(model="demo", input="Weather in Oslo?")
    assert response.output_text == "Let me check."
    assert [item.type for item in response.output] == [
        "reasoning",
        "message",
        "function_call",
        "custom_tool_call",
    ]
    assert response.usage is not None and response.usage.input_tokens_details.cached_tokens == 16
