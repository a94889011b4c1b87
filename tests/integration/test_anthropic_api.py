"""Anthropic Messages through the endpoint, with the official `anthropic` SDK against real
clusters: one whose only node runs MLX, one whose only node runs vLLM (the CPU build), each on
the demo model. Streams are checked event by event; tool inputs against their schemas."""

from __future__ import annotations

import json
from typing import Any

import anthropic
import httpx
import jsonschema
import pytest

from tests.harness import ClusterProcess

pytestmark = pytest.mark.timeout(900)

WEATHER = {
    "type": "object",
    "properties": {
        "city": {"type": "string", "maxLength": 24},
        "days": {"type": "integer", "minimum": 1, "maximum": 7},
    },
    "required": ["city", "days"],
    "additionalProperties": False,
}
TOOLS: list[Any] = [
    {"name": "get_weather", "description": "The forecast", "input_schema": WEATHER},
    {
        "name": "get_time",
        "input_schema": {
            "type": "object",
            "properties": {"zone": {"type": "string", "maxLength": 12}},
            "required": ["zone"],
            "additionalProperties": False,  # else the demo model adds keys until max_tokens
        },
    },
]
GREEDY = {"temperature": 0}  # the SDK no longer types `temperature`; the API still takes it
ASK: list[Any] = [{"role": "user", "content": "What is the weather in Oslo this week?"}]
SYSTEM = [
    {"type": "text", "text": "x-anthropic-billing-header: cc_version=2.1.0; cc_entrypoint=cli;"},
    {
        "type": "text",
        "text": "You are a helpful assistant.",
        "cache_control": {"type": "ephemeral"},
    },
]


@pytest.fixture
def client(engine_cluster: ClusterProcess) -> anthropic.Anthropic:
    """The official client, pointed at the cluster as Claude Code points it (base URL only)."""
    return anthropic.Anthropic(base_url=engine_cluster.url, api_key="unused", max_retries=0)


def test_a_message_is_created_with_usage(client: anthropic.Anthropic) -> None:
    message = client.messages.create(
        model="demo", max_tokens=24, messages=ASK, system=SYSTEM, extra_body=GREEDY
    )
    assert message.type == "message" and message.role == "assistant"
    assert message.id.startswith("msg_") and message.model == "demo"
    assert [b.type for b in message.content] == ["text"] and message.content[0].text  # type: ignore[union-attr]
    assert message.stop_reason in ("end_turn", "max_tokens")
    assert message.usage.input_tokens > 0 and 0 < message.usage.output_tokens <= 24


def test_a_stream_follows_anthropics_events_and_gathers_into_the_same_message(
    client: anthropic.Anthropic,
) -> None:
    kwargs: dict[str, Any] = {
        "model": "demo",
        "max_tokens": 24,
        "messages": ASK,
        "extra_body": GREEDY,
    }
    with client.messages.stream(**kwargs) as stream:
        kinds = [event.type for event in stream]
        final = stream.get_final_message()
    # message_start, (ping), one text block, message_delta, message_stop; the SDK adds its own
    # "text" events beside each text delta.
    core = [k for k in kinds if k not in ("ping", "text")]
    assert core[:2] == ["message_start", "content_block_start"]
    assert core[-3:] == ["content_block_stop", "message_delta", "message_stop"]
    assert set(core[2:-3]) == {"content_block_delta"}
    whole = client.messages.create(**kwargs)
    assert final.content[0].text == whole.content[0].text  # type: ignore[union-attr]
    assert final.stop_reason == whole.stop_reason
    assert final.usage.output_tokens == whole.usage.output_tokens
    assert final.usage.input_tokens + (final.usage.cache_read_input_tokens or 0) == (
        whole.usage.input_tokens + (whole.usage.cache_read_input_tokens or 0)
    )


def test_any_and_named_tool_choices_call_with_valid_input(client: anthropic.Anthropic) -> None:
    for choice, name in (
        ({"type": "any"}, None),
        ({"type": "tool", "name": "get_time"}, "get_time"),
    ):
        message = client.messages.create(
            model="demo",
            max_tokens=96,
            messages=ASK,
            tools=TOOLS,
            tool_choice=choice,  # type: ignore[arg-type]
        )
        assert message.stop_reason == "tool_use"
        uses = [b for b in message.content if b.type == "tool_use"]
        assert uses, message.content
        for use in uses:
            assert use.id
            schema = next(t["input_schema"] for t in TOOLS if t["name"] == use.name)
            jsonschema.validate(use.input, schema)
            assert name is None or use.name == name


def test_a_streamed_tool_use_gathers_into_valid_input(client: anthropic.Anthropic) -> None:
    with client.messages.stream(
        model="demo",
        max_tokens=96,
        messages=ASK,
        tools=TOOLS,
        tool_choice={"type": "tool", "name": "get_weather"},
    ) as stream:
        kinds = [event.type for event in stream]
        final = stream.get_final_message()
    assert "input_json" in kinds  # the SDK's event for each input_json_delta
    [use] = [b for b in final.content if b.type == "tool_use"]
    jsonschema.validate(use.input, WEATHER)
    assert final.stop_reason == "tool_use"


def test_a_tool_result_round_trip_is_answered(client: anthropic.Anthropic) -> None:
    first = client.messages.create(
        model="demo",
        max_tokens=96,
        messages=ASK,
        tools=TOOLS,
        tool_choice={"type": "tool", "name": "get_weather"},
    )
    [use] = [b for b in first.content if b.type == "tool_use"]
    history: list[Any] = [
        *ASK,
        {"role": "assistant", "content": [b.model_dump() for b in first.content]},
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": use.id, "content": "Sunny, 21 C."},
                {"type": "text", "text": "Summarise it."},
            ],
        },
    ]
    answer = client.messages.create(
        model="demo", max_tokens=24, messages=history, tools=TOOLS, extra_body=GREEDY
    )
    assert answer.content and answer.stop_reason in ("end_turn", "max_tokens", "tool_use")
    assert answer.usage.input_tokens + (answer.usage.cache_read_input_tokens or 0) > (
        first.usage.input_tokens
    )


def test_thinking_comes_as_a_thinking_block_first(client: anthropic.Anthropic) -> None:
    message = client.messages.create(
        model="demo",
        max_tokens=160,
        messages=ASK,
        thinking={"type": "enabled", "budget_tokens": 1024},
    )
    assert message.content[0].type == "thinking" and message.content[0].thinking  # type: ignore[union-attr]
    plain = client.messages.create(model="demo", max_tokens=24, messages=ASK)
    assert all(b.type != "thinking" for b in plain.content)  # no `thinking`: no thoughts


def test_a_stop_sequence_ends_the_message_and_is_named(client: anthropic.Anthropic) -> None:
    free = client.messages.create(model="demo", max_tokens=24, messages=ASK, extra_body=GREEDY)
    word = free.content[0].text.split()[2]  # type: ignore[union-attr]
    stopped = client.messages.create(
        model="demo", max_tokens=24, messages=ASK, extra_body=GREEDY, stop_sequences=[word]
    )
    assert (stopped.stop_reason, stopped.stop_sequence) == ("stop_sequence", word)
    assert word not in stopped.content[0].text  # type: ignore[union-attr]


def test_count_tokens_matches_what_the_message_used(client: anthropic.Anthropic) -> None:
    kwargs: dict[str, Any] = {"model": "demo", "messages": ASK, "system": SYSTEM, "tools": TOOLS}
    counted = client.messages.count_tokens(**kwargs)
    used = client.messages.create(max_tokens=1, **kwargs).usage
    assert counted.input_tokens == used.input_tokens + (used.cache_read_input_tokens or 0)


def test_a_repeated_prefix_is_read_from_the_cache(client: anthropic.Anthropic) -> None:
    long = [{"role": "user", "content": "Tell me about the harbour. " * 60}]
    client.messages.create(model="demo", max_tokens=2, messages=long)
    again = client.messages.create(model="demo", max_tokens=2, messages=long)
    assert (again.usage.cache_read_input_tokens or 0) > 100


def test_models_are_listed_in_anthropics_shape(client: anthropic.Anthropic) -> None:
    page = client.models.list()
    assert [m.id for m in page.data] == ["demo"] and page.data[0].type == "model"


@pytest.mark.parametrize(
    ("body", "status", "kind"),
    [
        ({"model": "demo", "messages": ASK}, 400, "invalid_request_error"),  # no max_tokens
        ({"model": "absent", "max_tokens": 4, "messages": ASK}, 404, "not_found_error"),
        (
            {"model": "demo", "max_tokens": 4, "messages": ASK, "tools": [{"name": "t"}]},
            400,
            "invalid_request_error",
        ),
        ("{not json", 400, "invalid_request_error"),
    ],
)
def test_bad_requests_get_anthropics_error_shape(
    engine_cluster: ClusterProcess, body: Any, status: int, kind: str
) -> None:
    content = body if isinstance(body, str) else json.dumps(body)
    headers = {"x-api-key": "unused", "anthropic-version": "2023-06-01"}
    r = httpx.post(f"{engine_cluster.url}/v1/messages?beta=true", content=content, headers=headers)
    assert r.status_code == status, r.text
    assert r.json()["type"] == "error" and r.json()["error"]["type"] == kind
    assert r.json()["error"]["message"]


def test_the_sdk_raises_its_own_errors(client: anthropic.Anthropic) -> None:
    with pytest.raises(anthropic.NotFoundError) as caught:
        client.messages.create(model="absent", max_tokens=4, messages=ASK)
    assert caught.value.status_code == 404
