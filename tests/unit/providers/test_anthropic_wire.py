"""The internal request as an Anthropic-kind provider reads it, and its stream read back."""

from __future__ import annotations

import pytest

from cluster.errors import InvalidRequest, NoCapacity
from cluster.providers.anthropic_wire import EventReader, headers, request_body
from node_agent.types import (
    ChatMessage,
    Constraint,
    ConstraintKind,
    Delta,
    Finished,
    GenerateRequest,
    ReasoningDelta,
    Sampling,
    Tool,
    ToolCall,
    ToolCallDelta,
    ToolChoice,
    ToolChoiceMode,
)


def test_a_chat_request_is_written_as_messages() -> None:
    request = GenerateRequest(
        request_id="r",
        model="demo",
        messages=(
            ChatMessage(role="system", content="Be brief."),
            ChatMessage(role="user", content="add"),
            ChatMessage(
                role="assistant",
                content="",
                tool_calls=(ToolCall(id="c1", name="add", arguments='{"a": 1}'),),
            ),
            ChatMessage(role="tool", content="2", tool_call_id="c1"),
            ChatMessage(role="user", content="thanks"),
        ),
        sampling=Sampling(max_tokens=9, temperature=1.5, stop=("\n",)),
        tools=(Tool(name="add", description="adds"),),
        tool_choice=ToolChoice(mode=ToolChoiceMode.REQUIRED),
        parallel_tool_calls=False,
    )
    body = request_body(request, "claude-x")
    assert body["model"] == "claude-x" and body["stream"] is True and body["max_tokens"] == 9
    assert body["temperature"] == 1.0 and body["stop_sequences"] == ["\n"]  # its range is 0..1
    assert body["system"] == "Be brief."
    assert body["messages"] == [
        {"role": "user", "content": [{"type": "text", "text": "add"}]},
        {
            "role": "assistant",
            "content": [{"type": "tool_use", "id": "c1", "name": "add", "input": {"a": 1}}],
        },
        {
            "role": "user",  # the tool's result and the next words: one user turn
            "content": [
                {
                    "type": "tool_result",
                    "tool_use_id": "c1",
                    "content": [{"type": "text", "text": "2"}],
                },
                {"type": "text", "text": "thanks"},
            ],
        },
    ]
    assert body["tools"][0]["input_schema"] == {"type": "object", "properties": {}}
    assert body["tool_choice"] == {"type": "any", "disable_parallel_tool_use": True}
    assert headers("sk")["x-api-key"] == "sk" and "anthropic-version" in headers("sk")


def test_a_prompt_is_one_user_turn_and_constraints_are_refused() -> None:
    text = GenerateRequest(request_id="r", model="m", text="Once")
    assert request_body(text, "m")["messages"] == [
        {"role": "user", "content": [{"type": "text", "text": "Once"}]}
    ]
    schema = Constraint(ConstraintKind.JSON_OBJECT)
    with pytest.raises(InvalidRequest):
        request_body(
            GenerateRequest(request_id="r", model="m", messages=(), constraint=schema), "m"
        )


def test_stream_events_become_a_nodes_events_with_the_providers_usage() -> None:
    reader = EventReader()
    stream = [
        {
            "type": "message_start",
            "message": {"usage": {"input_tokens": 5, "cache_read_input_tokens": 2}},
        },
        {"type": "content_block_start", "index": 0, "content_block": {"type": "thinking"}},
        {
            "type": "content_block_delta",
            "index": 0,
            "delta": {"type": "thinking_delta", "thinking": "hm"},
        },
        {"type": "content_block_stop", "index": 0},
        {"type": "content_block_start", "index": 1, "content_block": {"type": "text"}},
        {"type": "content_block_delta", "index": 1, "delta": {"type": "text_delta", "text": "Hi"}},
        {
            "type": "content_block_start",
            "index": 2,
            "content_block": {"type": "tool_use", "id": "t", "name": "f"},
        },
        {
            "type": "content_block_delta",
            "index": 2,
            "delta": {"type": "input_json_delta", "partial_json": "{}"},
        },
        {"type": "content_block_stop", "index": 2},
        {
            "type": "message_delta",
            "delta": {"stop_reason": "tool_use"},
            "usage": {"output_tokens": 4},
        },
        {"type": "message_stop"},
    ]
    events = [e for event in stream for e in reader.read(event)]
    assert events == [
        ReasoningDelta(text="hm", tokens=1),
        Delta(text="Hi", tokens=1),
        ToolCallDelta(index=0, id="t", name="f", tokens=1),
        ToolCallDelta(index=0, arguments="{}", tokens=1),
        ToolCallDelta(index=0, done=True),
    ]
    (finished,) = reader.end(duration_s=1.0, ttft_s=0.2)
    assert isinstance(finished, Finished) and finished.finish_reason == "tool_calls"
    u = finished.usage
    assert (u.prompt_tokens, u.cached_prompt_tokens, u.completion_tokens) == (7, 2, 4)


def test_an_error_event_is_a_503() -> None:
    with pytest.raises(NoCapacity, match="overloaded"):
        EventReader().read(
            {"type": "error", "error": {"type": "overloaded_error", "message": "overloaded"}}
        )
