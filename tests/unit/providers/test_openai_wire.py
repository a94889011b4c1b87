"""The internal request as an OpenAI-compatible provider reads it, and its stream read back."""

from __future__ import annotations

import pytest

from cluster.errors import InvalidRequest
from cluster.providers.openai_wire import ChunkReader, path, request_body
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

CHAT = GenerateRequest(
    request_id="r",
    model="demo",
    messages=(
        ChatMessage(role="system", content="Be brief."),
        ChatMessage(
            role="assistant", content="", tool_calls=(ToolCall(id="c1", name="f", arguments="{}"),)
        ),
        ChatMessage(role="tool", content="42", tool_call_id="c1", name="f"),
    ),
    sampling=Sampling(max_tokens=9, temperature=0.5, stop=("\n",), seed=3),
    tools=(Tool(name="f", description="a function"),),
    tool_choice=ToolChoice(mode=ToolChoiceMode.NAMED, name="f"),
)


def test_a_chat_request_is_written_as_chat_completions_streamed_with_usage() -> None:
    body = request_body(CHAT, "gpt-x")
    assert path(CHAT) == "/chat/completions"
    assert body["model"] == "gpt-x" and body["stream"] is True
    assert body["stream_options"] == {"include_usage": True}
    assert (body["max_tokens"], body["temperature"], body["stop"], body["seed"]) == (
        9,
        0.5,
        ["\n"],
        3,
    )
    assert body["messages"][1]["tool_calls"] == [
        {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
    ]
    assert body["messages"][2] == {"role": "tool", "content": "42", "tool_call_id": "c1"}
    assert body["tools"][0]["function"]["parameters"] == {"type": "object", "properties": {}}
    assert body["tool_choice"] == {"type": "function", "function": {"name": "f"}}


def test_a_prompt_is_written_as_a_completion() -> None:
    text = GenerateRequest(request_id="r", model="demo", text="Once")
    assert path(text) == "/completions" and request_body(text, "m")["prompt"] == "Once"


def test_schemas_are_sent_and_grammars_refused() -> None:
    schema = Constraint(ConstraintKind.JSON_SCHEMA, '{"type": "object"}')
    body = request_body(
        GenerateRequest(request_id="r", model="m", messages=(), constraint=schema), "m"
    )
    assert body["response_format"]["json_schema"]["schema"] == {"type": "object"}
    lark = Constraint(ConstraintKind.LARK, "start: 'a'")
    with pytest.raises(InvalidRequest, match="lark"):
        request_body(GenerateRequest(request_id="r", model="m", messages=(), constraint=lark), "m")


def test_chunks_become_a_nodes_events_with_the_providers_usage() -> None:
    reader = ChunkReader()
    chunks = [
        {"choices": [{"delta": {"role": "assistant", "reasoning_content": "hm"}}]},
        {"choices": [{"delta": {"content": "Hi"}}]},
        {
            "choices": [
                {
                    "delta": {
                        "tool_calls": [
                            {"index": 0, "id": "c", "function": {"name": "f", "arguments": "{"}}
                        ]
                    }
                }
            ]
        },
        {"choices": [{"delta": {}, "finish_reason": "tool_calls"}]},
        {
            "choices": [],
            "usage": {
                "prompt_tokens": 7,
                "completion_tokens": 3,
                "prompt_tokens_details": {"cached_tokens": 2},
            },
        },
    ]
    events = [e for c in chunks for e in reader.read(c)]
    assert events == [
        ReasoningDelta(text="hm", tokens=1),
        Delta(text="Hi", tokens=1),
        ToolCallDelta(index=0, id="c", name="f", arguments="{", tokens=1),
    ]
    *done, finished = reader.end(duration_s=2.0, ttft_s=0.5)
    assert done == [ToolCallDelta(index=0, done=True)]
    assert isinstance(finished, Finished) and finished.finish_reason == "tool_calls"
    u = finished.usage
    assert (u.prompt_tokens, u.completion_tokens, u.cached_prompt_tokens) == (7, 3, 2)
    assert (u.ttft_seconds, u.duration_seconds) == (0.5, 2.0)


def test_a_completions_chunk_and_an_unknown_finish() -> None:
    reader = ChunkReader()
    assert reader.read({"choices": [{"text": "ab", "finish_reason": "content_filter"}]}) == [
        Delta(text="ab", tokens=1)
    ]
    finished = reader.end(1.0, 0.1)[-1]
    assert isinstance(finished, Finished) and finished.finish_reason == "stop"
