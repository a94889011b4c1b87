"""Tool calls, reasoning, logprobs and several choices in OpenAI's shapes (gateway/openai/stream.py
and openai/encode.py): the chunks as OpenAI documents them, and the whole stream put back together
by the official `openai` SDK's own accumulator (`chat.completions.stream`)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx2
import openai
import pytest
from openai.types import Completion
from openai.types.chat import ChatCompletion, ChatCompletionChunk, ChatCompletionToolParam

from cluster.errors import UpstreamFailed
from cluster.gateway.openai.encode import (
    SSE_DONE,
    Choice,
    chat_completion,
    dumps,
    text_completion,
)
from cluster.gateway.openai.stream import ChatStreamEncoder, CompletionStreamEncoder
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
ARGS = ['{"city": ', '"Oslo"}']
TOOL_CALLS: list[GenerateEvent] = [
    ReasoningDelta("The user wants ", 2, prompt_tokens=20, cached_prompt_tokens=16),
    ReasoningDelta("the weather.", 2),
    ToolCallDelta(index=0, id="call_0123456789abcdef01234567", name="get_weather", tokens=1),
    ToolCallDelta(index=0, arguments=ARGS[0], tokens=3),
    ToolCallDelta(index=0, arguments=ARGS[1], tokens=2),
    ToolCallDelta(index=0, done=True),
    ToolCallDelta(index=1, id="call_fedcba9876543210fedcba98", name="get_time", tokens=1),
    ToolCallDelta(index=1, arguments="{}", tokens=1),
    ToolCallDelta(index=1, done=True),
    Finished("tool_calls", USAGE),
]
WEATHER_TOOL: ChatCompletionToolParam = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
            "additionalProperties": False,
        },
        "strict": True,
    },
}
TIME_TOOL: ChatCompletionToolParam = {"type": "function", "function": {"name": "get_time"}}
HI = TopLogprob("Hi", -0.1, b"Hi")
LOGPROB_EVENTS: list[GenerateEvent] = [
    Delta("Hi", 1, logprobs=(TokenLogprob("Hi", -0.1, b"Hi", (HI, TopLogprob("Hey", -2.5))),)),
    Delta(" é", 1, logprobs=(TokenLogprob(" é", -0.7, top=(TopLogprob(" é", -0.7),)),)),
    Finished("stop", USAGE),
]


def chat_frames(
    events: list[GenerateEvent] | list[tuple[int, GenerateEvent]],
    *,
    choices: int = 1,
    include_usage: bool = True,
) -> bytes:
    encoder = ChatStreamEncoder(
        request_id="r1", model="demo", created=1, include_usage=include_usage, choices=choices
    )
    return b"".join(
        encoder.event(e[1], e[0]) if isinstance(e, tuple) else encoder.event(e) for e in events
    )


def payloads(raw: bytes) -> list[dict[str, Any]]:
    assert raw.endswith(SSE_DONE)
    return [json.loads(e.removeprefix("data: ")) for e in raw.decode().split("\n\n")[:-2]]


def deltas(raw: bytes) -> list[dict[str, Any]]:
    return [p["choices"][0]["delta"] for p in payloads(raw) if p["choices"]]


@contextmanager
def client(body: bytes) -> Iterator[openai.OpenAI]:
    def answer(request: httpx2.Request) -> httpx2.Response:
        return httpx2.Response(200, headers={"content-type": "text/event-stream"}, content=body)

    with httpx2.Client(transport=httpx2.MockTransport(answer)) as http:
        yield openai.OpenAI(
            api_key="k", base_url="http://head.test/v1", http_client=http, max_retries=0
        )


def accumulated(body: bytes, **create: Any) -> Any:
    """The SDK's own assembly of a streamed chat completion."""
    with (
        client(body) as api,
        api.chat.completions.stream(
            model="demo", messages=[{"role": "user", "content": "hi"}], **create
        ) as stream,
    ):
        for _ in stream:
            pass
        return stream.get_final_completion()


# --- tool calls and reasoning, streamed ---------------------------------------------------------


def test_tool_call_chunks_are_openais() -> None:
    chunks = deltas(chat_frames(TOOL_CALLS))
    assert chunks[0] == {"role": "assistant", "content": ""}
    assert chunks[1] == {"reasoning_content": "The user wants ", "reasoning": "The user wants "}
    # A call's first chunk: index, id, type and name, with empty arguments; then only fragments.
    assert chunks[3] == {
        "tool_calls": [
            {
                "index": 0,
                "id": "call_0123456789abcdef01234567",
                "type": "function",
                "function": {"name": "get_weather", "arguments": ""},
            }
        ]
    }
    assert chunks[4] == {"tool_calls": [{"index": 0, "function": {"arguments": ARGS[0]}}]}
    assert chunks[5] == {"tool_calls": [{"index": 0, "function": {"arguments": ARGS[1]}}]}
    assert chunks[6]["tool_calls"][0]["index"] == 1
    assert chunks[8] == {}  # the finish chunk; a call's end shows nothing
    finish, usage = payloads(chat_frames(TOOL_CALLS))[-2:]
    assert finish["choices"][0]["finish_reason"] == "tool_calls"
    assert usage["usage"] == {
        "prompt_tokens": 20,
        "completion_tokens": 12,
        "total_tokens": 32,
        "prompt_tokens_details": {"cached_tokens": 16},
        "completion_tokens_details": {"reasoning_tokens": 4},
    }
    for p in payloads(chat_frames(TOOL_CALLS)):
        ChatCompletionChunk.model_validate(p)


def test_an_answer_that_opens_with_a_call_carries_the_role_on_it() -> None:
    first = deltas(chat_frames(TOOL_CALLS[2:]))[0]
    assert first["role"] == "assistant" and first["content"] is None
    assert first["tool_calls"][0]["function"] == {"name": "get_weather", "arguments": ""}


def test_the_sdk_assembles_the_streamed_calls() -> None:
    tools = [WEATHER_TOOL, TIME_TOOL]
    for events in (TOOL_CALLS, TOOL_CALLS[2:]):
        done = accumulated(chat_frames(events), tools=tools)
        choice = done.choices[0]
        assert choice.finish_reason == "tool_calls"
        calls = choice.message.tool_calls
        assert [(c.id, c.function.name, c.function.arguments) for c in calls] == [
            ("call_0123456789abcdef01234567", "get_weather", '{"city": "Oslo"}'),
            ("call_fedcba9876543210fedcba98", "get_time", "{}"),
        ]
        assert calls[0].function.parsed_arguments == {"city": "Oslo"}  # strict: parsed
        assert done.usage.completion_tokens_details.reasoning_tokens == 4
    # The SDK keeps the fields it does not know, concatenated like content.
    assert accumulated(chat_frames(TOOL_CALLS), tools=tools).choices[0].message.model_extra == {
        "reasoning_content": "The user wants the weather.",
        "reasoning": "The user wants the weather.",
    }


def test_a_failure_mid_call_ends_with_the_usage_so_far_and_the_error() -> None:
    encoder = ChatStreamEncoder(request_id="r", model="demo", created=1, include_usage=True)
    started = b"".join(encoder.event(e) for e in TOOL_CALLS[:4])
    ended = encoder.fail(UpstreamFailed("node lost"), prompt_tokens=20, cached_tokens=16)
    usage, error = payloads(ended)
    assert usage["choices"] == [] and usage["usage"]["completion_tokens"] == 8
    assert usage["usage"]["completion_tokens_details"] == {"reasoning_tokens": 4}
    assert usage["usage"]["prompt_tokens_details"] == {"cached_tokens": 16}
    assert error == UpstreamFailed("node lost").body()
    with client(started + ended) as api, pytest.raises(openai.APIError, match="node lost"):
        list(api.chat.completions.create(model="demo", messages=[], stream=True))


# --- logprobs -----------------------------------------------------------------------------------


def test_streamed_logprobs_per_chunk() -> None:
    chunks = [p["choices"][0] for p in payloads(chat_frames(LOGPROB_EVENTS)) if p["choices"]]
    assert chunks[1]["logprobs"] == {
        "content": [
            {
                "token": "Hi",
                "logprob": -0.1,
                "bytes": [72, 105],
                "top_logprobs": [
                    {"token": "Hi", "logprob": -0.1, "bytes": [72, 105]},
                    {"token": "Hey", "logprob": -2.5, "bytes": [72, 101, 121]},
                ],
            }
        ],
        "refusal": None,
    }
    # Bytes not sent by the node are the token's UTF-8.
    assert chunks[2]["logprobs"]["content"][0]["bytes"] == [32, 195, 169]
    done = accumulated(chat_frames(LOGPROB_EVENTS), logprobs=True, top_logprobs=2)
    tokens = done.choices[0].logprobs.content
    assert [t.token for t in tokens] == ["Hi", " é"] and tokens[0].top_logprobs[1].token == "Hey"


def test_whole_chat_answer_with_calls_reasoning_and_logprobs() -> None:
    choice = Choice()
    for event in [*TOOL_CALLS[:-1], *LOGPROB_EVENTS[:-1]]:
        assert not isinstance(event, Finished)
        choice.add(event)
    choice.finished = Finished("tool_calls", USAGE)
    body = chat_completion(request_id="r", model="demo", created=1, choices=[choice], logprobs=True)
    parsed = ChatCompletion.model_validate(json.loads(dumps(body)))
    message = parsed.choices[0].message
    assert message.content == "Hi é" and parsed.choices[0].finish_reason == "tool_calls"
    assert [c.function.arguments for c in message.tool_calls or []] == ['{"city": "Oslo"}', "{}"]
    assert body["choices"][0]["message"]["reasoning_content"] == "The user wants the weather."
    assert body["choices"][0]["message"]["reasoning"] == "The user wants the weather."
    assert parsed.choices[0].logprobs is not None
    assert [t.logprob for t in parsed.choices[0].logprobs.content or []] == [-0.1, -0.7]
    assert parsed.usage is not None and parsed.usage.completion_tokens_details is not None
    assert parsed.usage.completion_tokens_details.reasoning_tokens == 4


def test_only_calls_means_null_content_and_no_reasoning_fields() -> None:
    choice = Choice()
    for event in TOOL_CALLS[2:-1]:
        assert not isinstance(event, Finished)
        choice.add(event)
    choice.finished = Finished("tool_calls", USAGE)
    message = chat_completion(request_id="r", model="m", created=1, choices=[choice])
    assert message["choices"][0]["message"]["content"] is None
    assert "reasoning" not in message["choices"][0]["message"]
    assert message["choices"][0]["logprobs"] is None


def test_text_completion_logprobs_in_the_legacy_shape() -> None:
    encoder = CompletionStreamEncoder(request_id="r", model="demo", created=1, include_usage=False)
    chunks = payloads(b"".join(encoder.event(e) for e in LOGPROB_EVENTS))
    assert chunks[1]["choices"][0]["logprobs"] == {
        "tokens": [" é"],
        "token_logprobs": [-0.7],
        "top_logprobs": [{" é": -0.7}],
        "text_offset": [2],  # after the "Hi" already sent
    }
    choice = Choice()
    for event in LOGPROB_EVENTS[:-1]:
        assert isinstance(event, Delta)
        choice.add(event)
    choice.finished = Finished("length", USAGE)
    body = text_completion(request_id="r", model="demo", created=1, choices=[choice], logprobs=True)
    parsed = Completion.model_validate(json.loads(dumps(body)))
    logprobs = parsed.choices[0].logprobs
    assert logprobs is not None and logprobs.text_offset == [0, 2]
    assert logprobs.top_logprobs == [{"Hi": -0.1, "Hey": -2.5}, {" é": -0.7}]


# --- several choices ----------------------------------------------------------------------------


def usage(completion: int, cached: int) -> Usage:
    return Usage(
        prompt_tokens=20,
        completion_tokens=completion,
        cached_prompt_tokens=cached,
        ttft_seconds=0.0,
        decode_tokens_per_second=0.0,
        duration_seconds=0.0,
    )


TWO: list[tuple[int, GenerateEvent]] = [
    (1, Delta("B", 1)),  # choice 1 speaks first
    (0, Delta("A", 1)),
    (1, Delta("b", 1)),
    (1, Finished("stop", usage(2, 0))),
    (0, ToolCallDelta(index=0, id="call_x", name="get_time")),
    (0, ToolCallDelta(index=0, arguments="{}", tokens=2)),
    (0, Finished("tool_calls", usage(3, 16))),
]


def test_interleaved_choices_each_say_their_index() -> None:
    raw = chat_frames(TWO, choices=2)
    chunks = payloads(raw)
    assert [c["choices"][0]["index"] for c in chunks[:2]] == [0, 1]  # both open, in order
    finishes = [
        c["choices"][0] for c in chunks if c["choices"] and c["choices"][0]["finish_reason"]
    ]
    assert [(f["index"], f["finish_reason"]) for f in finishes] == [
        (1, "stop"),
        (0, "tool_calls"),
    ]
    # One [DONE] and one usage, after the last choice ends: the prompt once, the outputs summed.
    assert raw.count(SSE_DONE) == 1
    assert chunks[-1]["usage"]["completion_tokens"] == 5
    assert chunks[-1]["usage"]["prompt_tokens"] == 20
    assert chunks[-1]["usage"]["prompt_tokens_details"] == {"cached_tokens": 16}


def test_the_sdk_assembles_interleaved_choices() -> None:
    done = accumulated(chat_frames(TWO, choices=2), n=2, tools=[TIME_TOOL])
    first, second = done.choices
    assert (first.index, second.index) == (0, 1)
    assert first.message.content == "A" and first.finish_reason == "tool_calls"
    assert first.message.tool_calls[0].function.name == "get_time"
    assert second.message.content == "Bb" and second.finish_reason == "stop"


def test_a_choice_that_finishes_twice_counts_once() -> None:
    encoder = ChatStreamEncoder(
        request_id="r", model="m", created=1, include_usage=False, choices=2
    )
    assert encoder.event(Finished("stop", usage(1, 0)), 0).count(b'"finish_reason":"stop"') == 1
    assert encoder.event(Finished("stop", usage(1, 0)), 0) == b""
    assert encoder.event(Finished("stop", usage(1, 0)), 1).endswith(SSE_DONE)


def test_whole_answer_with_several_choices() -> None:
    choices = [Choice(), Choice()]
    for index, event in TWO:
        if isinstance(event, Finished):
            choices[index].finished = event
        else:
            choices[index].add(event)
    body = chat_completion(request_id="r", model="demo", created=1, choices=choices)
    parsed = ChatCompletion.model_validate(json.loads(dumps(body)))
    assert [(c.index, c.message.content) for c in parsed.choices] == [(0, "A"), (1, "Bb")]
    assert parsed.usage is not None and parsed.usage.completion_tokens == 5


def test_a_call_is_named_once_even_if_the_node_repeats_it() -> None:
    events: list[GenerateEvent] = [
        ToolCallDelta(index=0, id="call_1", name="get_time"),
        ToolCallDelta(index=0, id="call_1", name="get_time", arguments="{}"),
        Finished("tool_calls", USAGE),
    ]
    done = accumulated(chat_frames(events), tools=[TIME_TOOL])
    call = done.choices[0].message.tool_calls[0]
    assert (call.id, call.function.name, call.function.arguments) == ("call_1", "get_time", "{}")
