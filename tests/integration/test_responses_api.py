"""The Responses API through the endpoint (stateless, as Codex uses it), with the official
`openai` SDK against real clusters: one whose only node runs MLX, one whose only node runs vLLM
(the CPU build), each on the demo model."""

from __future__ import annotations

import json
import re
from typing import Any

import httpx
import jsonschema
import openai
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
    {"type": "function", "name": "get_weather", "description": "Forecast", "parameters": WEATHER}
]
DOC = {
    "type": "object",
    "properties": {"title": {"type": "string", "maxLength": 20}, "stars": {"type": "integer"}},
    "required": ["title", "stars"],
    "additionalProperties": False,
}
ASK = "What is the weather in Oslo this week?"
NO_REASONING: dict[str, Any] = {"effort": "minimal"}


@pytest.fixture
def client(engine_cluster: ClusterProcess) -> openai.OpenAI:
    """The official client of the cluster."""
    return openai.OpenAI(base_url=f"{engine_cluster.url}/v1", api_key="unused", max_retries=0)


def test_a_response_is_created_with_usage(client: openai.OpenAI) -> None:
    response = client.responses.create(
        model="demo",
        input=ASK,
        instructions="Answer briefly.",
        max_output_tokens=24,
        reasoning=NO_REASONING,  # type: ignore[arg-type]
        store=False,
        temperature=0,
    )
    assert response.object == "response" and response.id.startswith("resp_")
    assert response.status in ("completed", "incomplete") and response.output_text
    assert response.usage is not None and response.usage.input_tokens > 0
    assert 0 < response.usage.output_tokens <= 24


def test_a_stream_follows_openais_events_and_ends_completed(client: openai.OpenAI) -> None:
    kwargs: dict[str, Any] = {
        "model": "demo",
        "input": ASK,
        "max_output_tokens": 24,
        "reasoning": NO_REASONING,
        "temperature": 0,
    }
    events = list(client.responses.create(stream=True, **kwargs))
    kinds = [e.type for e in events]
    assert kinds[:2] == ["response.created", "response.in_progress"]
    assert kinds[2:5] == [
        "response.output_item.added",
        "response.content_part.added",
        "response.output_text.delta",
    ]
    assert kinds[-4:] == [
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        kinds[-1],
    ] and kinds[-1] in ("response.completed", "response.incomplete")
    numbers = [e.sequence_number for e in events]
    assert numbers == sorted(numbers) and len(set(numbers)) == len(numbers)
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    whole = client.responses.create(**kwargs)
    assert text == whole.output_text
    assert events[-1].response.usage.output_tokens == whole.usage.output_tokens  # type: ignore[union-attr]


def test_a_function_call_and_its_output_round_trip(client: openai.OpenAI) -> None:
    first = client.responses.create(
        model="demo", input=ASK, tools=TOOLS, tool_choice="required", max_output_tokens=96
    )
    [call] = [item for item in first.output if item.type == "function_call"][:1]
    jsonschema.validate(json.loads(call.arguments), WEATHER)
    assert call.name == "get_weather" and call.call_id
    answer = client.responses.create(
        model="demo",
        input=[
            {"role": "user", "content": ASK},
            {
                "type": "function_call",
                "call_id": call.call_id,
                "name": call.name,
                "arguments": call.arguments,
            },
            {"type": "function_call_output", "call_id": call.call_id, "output": "Sunny, 21 C."},
        ],
        tools=TOOLS,
        max_output_tokens=24,
        reasoning=NO_REASONING,  # type: ignore[arg-type]
    )
    assert answer.status in ("completed", "incomplete") and answer.output


def test_a_streamed_function_call_gathers_into_valid_arguments(client: openai.OpenAI) -> None:
    with client.responses.stream(
        model="demo", input=ASK, tools=TOOLS, tool_choice="required", max_output_tokens=96
    ) as stream:
        kinds = [e.type for e in stream]
        final = stream.get_final_response()
    assert "response.function_call_arguments.delta" in kinds
    assert "response.function_call_arguments.done" in kinds
    calls = [item for item in final.output if item.type == "function_call"]
    assert calls and all(
        jsonschema.validate(json.loads(c.arguments), WEATHER) is None for c in calls
    )


def test_a_namespaces_tools_are_offered_in_its_place(client: openai.OpenAI) -> None:
    # As Codex groups its sub-agent tools; hosted tools beside it are left out.
    namespace = {
        "type": "namespace",
        "name": "agents",
        "description": "Forecasters",
        "tools": TOOLS,
    }
    response = client.responses.create(
        model="demo",
        input=ASK,
        tools=[namespace, {"type": "web_search"}],  # type: ignore[list-item]
        tool_choice="required",
        max_output_tokens=96,
    )
    [call] = [item for item in response.output if item.type == "function_call"][:1]
    assert call.name == "get_weather"
    jsonschema.validate(json.loads(call.arguments), WEATHER)


def test_a_json_schema_text_format_validates(client: openai.OpenAI) -> None:
    response = client.responses.create(
        model="demo",
        input="Rate the office.",
        text={"format": {"type": "json_schema", "name": "rating", "schema": DOC, "strict": True}},
        max_output_tokens=64,
    )
    jsonschema.validate(json.loads(response.output_text), DOC)


SUM = {  # a freeform tool whose input must match a Lark grammar
    "type": "custom",
    "name": "add",
    "description": "Adds two numbers.",
    "format": {
        "type": "grammar",
        "syntax": "lark",
        "definition": 'start: "add " NUMBER " to " NUMBER\nNUMBER: /[0-9]{1,3}/\n',
    },
}
CODE = {
    "type": "custom",
    "name": "code",
    "format": {"type": "grammar", "syntax": "regex", "definition": "[A-Z]{3}-[0-9]{2}"},
}


def test_a_custom_tools_input_matches_its_grammar(client: openai.OpenAI) -> None:
    response = client.responses.create(
        model="demo",
        input="What is 2 and 3?",
        tools=[SUM, *TOOLS],
        tool_choice={"type": "custom", "name": "add"},
        max_output_tokens=48,
    )
    [call] = [item for item in response.output if item.type == "custom_tool_call"]
    assert call.name == "add" and re.fullmatch(r"add [0-9]{1,3} to [0-9]{1,3}", call.input)
    with client.responses.stream(
        model="demo",
        input="Which code?",
        tools=[CODE, SUM],
        tool_choice="required",
        max_output_tokens=48,
    ) as stream:
        kinds = {e.type for e in stream}
        final = stream.get_final_response()
    assert "response.custom_tool_call_input.delta" in kinds
    calls = [item for item in final.output if item.type == "custom_tool_call"]
    assert calls and all(
        re.fullmatch(r"[A-Z]{3}-[0-9]{2}", c.input)
        if c.name == "code"
        else re.fullmatch(r"add [0-9]{1,3} to [0-9]{1,3}", c.input)
        for c in calls
    )


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"previous_response_id": "resp_1"}, "previous_response_id"),
        ({"store": True}, "store"),
        ({"tools": [{"type": "teleport"}]}, "tools.0"),
        (  # a grammar that does not compile, refused by the node that would hold to it
            {
                "tools": [{**SUM, "format": {**SUM["format"], "definition": "start: nothing"}}],
                "tool_choice": "required",
            },
            None,
        ),
        ({"text": {"format": {"type": "json_schema", "name": "x", "schema": {"type": 5}}}}, None),
    ],
)
def test_bad_requests_are_400s_in_openais_shape(
    engine_cluster: ClusterProcess, body: dict[str, Any], param: str | None
) -> None:
    body = {"model": "demo", "input": "hi", **body}
    r = httpx.post(f"{engine_cluster.url}/v1/responses", json=body, timeout=30)
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["message"] and error["type"] == "invalid_request_error"
    assert param is None or (error["param"] or "").startswith(param)


def test_a_prompt_over_the_context_fails_the_stream_as_codex_reads_it(
    engine_cluster: ClusterProcess,
) -> None:
    body = {"model": "demo", "input": "word " * 40_000, "stream": True}
    with httpx.stream("POST", f"{engine_cluster.url}/v1/responses", json=body, timeout=60) as r:
        lines = [line for line in r.iter_lines() if line.startswith("data: ")]
    assert r.status_code == 200
    last = json.loads(lines[-1][6:])
    assert last["type"] == "response.failed"
    assert last["response"]["error"]["code"] == "context_length_exceeded"
