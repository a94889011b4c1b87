"""Agents through the endpoint: tool calls, structured outputs, logprobs, reasoning and n, with
the official `openai` SDK against real clusters: one whose only node runs MLX, one whose only
node runs vLLM (the CPU build), and one with both for samples spread over nodes. The demo
model's own choices are poor; the grammar is what makes its calls and documents valid."""

from __future__ import annotations

import json
from typing import Any

import jsonschema
import openai
import pytest

from tests.harness import AgentProcess, ClusterProcess, cluster_of

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
    {
        "type": "function",
        "function": {"name": "get_weather", "description": "The forecast", "parameters": WEATHER},
    },
    {
        "type": "function",
        "function": {
            "name": "get_time",
            "parameters": {
                "type": "object",
                "properties": {"zone": {"type": "string", "maxLength": 12}},
                "required": ["zone"],
                "additionalProperties": False,
            },
        },
    },
]
ASK: list[Any] = [{"role": "user", "content": "What is the weather in Oslo this week?"}]
NO_THINKING = {"chat_template_kwargs": {"enable_thinking": False}}


@pytest.fixture(scope="module")
def agents(engine_agents: dict[str, AgentProcess]) -> dict[str, AgentProcess]:
    """The package's MLX and vLLM agents (conftest.py)."""
    return engine_agents


@pytest.fixture(scope="module")
def client(engine_cluster: ClusterProcess) -> openai.OpenAI:
    """An OpenAI client of a cluster whose one node runs one engine (conftest.py)."""
    return openai.OpenAI(base_url=f"{engine_cluster.url}/v1", api_key="unused", max_retries=0)


def calls_of(message: Any) -> list[tuple[str, dict[str, Any]]]:
    """A message's tool calls as (name, arguments), each argument string parsed."""
    return [(c.function.name, json.loads(c.function.arguments)) for c in message.tool_calls or []]


def test_models_say_what_the_node_can_do(client: openai.OpenAI) -> None:
    [card] = client.models.list().data
    extra = card.model_extra or {}
    assert {"tools", "constraints", "logprobs"} <= set(extra["capabilities"])
    assert extra["context_length"] >= 32768 and len(extra["engines"]) == 1


def test_a_named_tool_call_validates_against_its_schema(client: openai.OpenAI) -> None:
    out = client.chat.completions.create(
        model="demo",
        messages=ASK,
        tools=TOOLS,
        tool_choice={"type": "function", "function": {"name": "get_weather"}},
        max_tokens=96,
        extra_body=NO_THINKING,
    )
    choice = out.choices[0]
    assert choice.finish_reason == "tool_calls"
    [(name, args)] = calls_of(choice.message)[:1]
    assert name == "get_weather"
    jsonschema.validate(args, WEATHER)
    assert choice.message.tool_calls and choice.message.tool_calls[0].id.startswith("call_")


def test_required_streamed_assembles_into_the_same_call_as_not_streamed(
    client: openai.OpenAI,
) -> None:
    kwargs: dict[str, Any] = {
        "model": "demo",
        "messages": ASK,
        "tools": TOOLS,
        "tool_choice": "required",
        "parallel_tool_calls": False,
        "max_tokens": 160,
        "temperature": 0,
        "extra_body": NO_THINKING,
    }
    whole = client.chat.completions.create(**kwargs)
    with client.chat.completions.stream(**kwargs) as stream:
        streamed = stream.get_final_completion()
    assert streamed.choices[0].finish_reason == whole.choices[0].finish_reason == "tool_calls"
    assert calls_of(streamed.choices[0].message) == calls_of(whole.choices[0].message)
    [(name, args)] = calls_of(whole.choices[0].message)  # no parallel calls: exactly one
    assert name in ("get_weather", "get_time")
    if name == "get_weather":
        jsonschema.validate(args, WEATHER)


def test_parallel_calls_each_validate(client: openai.OpenAI) -> None:
    out = client.chat.completions.create(
        model="demo",
        messages=ASK,
        tools=TOOLS,
        tool_choice="required",
        max_tokens=160,
        temperature=1.0,
        seed=7,
        extra_body=NO_THINKING,
    )
    calls = calls_of(out.choices[0].message)
    assert calls
    for name, args in calls:
        assert name in ("get_weather", "get_time")
        if name == "get_weather":
            jsonschema.validate(args, WEATHER)


def test_a_tool_result_round_trip_is_answered(client: openai.OpenAI) -> None:
    first = client.chat.completions.create(
        model="demo",
        messages=ASK,
        tools=TOOLS,
        max_tokens=96,
        extra_body=NO_THINKING,
        tool_choice={"type": "function", "function": {"name": "get_weather"}},
    )
    call = first.choices[0].message.tool_calls[0]  # type: ignore[index]
    history: list[Any] = [
        *ASK,
        first.choices[0].message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": call.id, "content": '{"forecast": "rain, 9 C"}'},
    ]
    answer = client.chat.completions.create(
        model="demo",
        messages=history,
        tools=TOOLS,
        tool_choice="none",
        max_tokens=16,
        extra_body=NO_THINKING,
    )
    assert answer.choices[0].message.content and not answer.choices[0].message.tool_calls
    assert answer.usage is not None and answer.usage.prompt_tokens > first.usage.prompt_tokens  # type: ignore[union-attr]


def test_json_schema_and_json_object_outputs_parse(client: openai.OpenAI) -> None:
    schema = {
        "type": "object",
        "properties": {
            "title": {"type": "string", "maxLength": 12},
            "rooms": {"type": "integer", "minimum": 1, "maximum": 99},
        },
        "required": ["title", "rooms"],
        "additionalProperties": False,
    }
    out = client.chat.completions.create(
        model="demo",
        messages=[{"role": "user", "content": "Describe the office."}],
        response_format={
            "type": "json_schema",
            "json_schema": {"name": "office", "schema": schema, "strict": True},
        },
        max_tokens=120,
        extra_body=NO_THINKING,
    )
    jsonschema.validate(json.loads(out.choices[0].message.content or ""), schema)
    obj = client.chat.completions.create(
        model="demo",
        messages=[{"role": "user", "content": "A JSON object, please."}],
        response_format={"type": "json_object"},
        max_tokens=200,
        extra_body=NO_THINKING,
    )
    assert out.choices[0].finish_reason == "stop"  # the schema's object always closes
    # Any object may run on past max_tokens (the engines' tests hold each token to the
    # grammar); one that ended must parse as an object.
    text = obj.choices[0].message.content or ""
    assert text.startswith("{")
    if obj.choices[0].finish_reason == "stop":
        assert isinstance(json.loads(text), dict)


def test_logprobs_with_top_k(client: openai.OpenAI) -> None:
    out = client.chat.completions.create(
        model="demo",
        messages=ASK,
        max_tokens=6,
        logprobs=True,
        top_logprobs=3,
        extra_body=NO_THINKING,
    )
    content = out.choices[0].logprobs.content  # type: ignore[union-attr]
    assert content is not None and out.usage is not None
    # One per token of text; the end-of-turn token, counted in usage, has none.
    assert 1 <= len(content) <= out.usage.completion_tokens <= len(content) + 1
    for token in content:
        assert token.logprob <= 0 and len(token.top_logprobs) == 3
        assert all(t.logprob <= 0 for t in token.top_logprobs)


def test_reasoning_is_split_out_when_the_template_thinks(client: openai.OpenAI) -> None:
    # A sampled thought of the demo model is empty about one time in twenty: three seeds.
    for seed in (1, 2, 3):
        out = client.chat.completions.create(
            model="demo",
            messages=ASK,
            max_tokens=24,
            seed=seed,
            extra_body={"chat_template_kwargs": {"enable_thinking": True}},
        )
        extra = out.choices[0].message.model_extra or {}
        if extra.get("reasoning_content"):
            break
    assert extra.get("reasoning_content") and extra.get("reasoning") == extra["reasoning_content"]
    assert "<think>" not in (out.choices[0].message.content or "")
    assert out.usage is not None
    details = out.usage.completion_tokens_details
    assert details is not None and (details.reasoning_tokens or 0) > 0


@pytest.mark.parametrize(
    ("body", "param"),
    [
        (
            {
                "response_format": {
                    "type": "json_schema",
                    "json_schema": {"name": "x", "schema": {"type": "objekt"}},
                }
            },
            "response_format.json_schema.schema",
        ),
        (
            {"tools": TOOLS, "tool_choice": {"type": "function", "function": {"name": "nope"}}},
            "tool_choice",
        ),
        (
            {"tools": [{"type": "function", "function": {"name": "f", "strict": True}}]},
            "tools.0.function.parameters",
        ),
        ({"logprobs": True, "top_logprobs": 21}, "top_logprobs"),
        ({"n": 9}, "n"),
    ],
)
def test_bad_agent_input_is_a_400_naming_the_param(
    client: openai.OpenAI, body: dict[str, Any], param: str
) -> None:
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(model="demo", messages=ASK, max_tokens=4, extra_body=body)
    assert err.value.status_code == 400
    assert (err.value.body or {}).get("param") == param  # type: ignore[union-attr]


def test_n_samples_spread_over_both_nodes(
    agents: dict[str, AgentProcess], tmp_path_factory: pytest.TempPathFactory
) -> None:
    cluster = cluster_of(tmp_path_factory.mktemp("head-both"), *agents.values())
    try:
        c = openai.OpenAI(base_url=f"{cluster.url}/v1", api_key="unused", max_retries=0)
        raw = c.chat.completions.with_raw_response.create(
            model="demo",
            messages=ASK,
            n=3,
            max_tokens=8,
            temperature=1.0,
            extra_body=NO_THINKING,
        )
        out = raw.parse()
        assert sorted(ch.index for ch in out.choices) == [0, 1, 2]
        assert all(ch.message.content for ch in out.choices)
        nodes = set(raw.headers["x-meterless-node"].split(","))
        assert len(nodes) == 2  # a cluster samples in parallel where one box cannot
    finally:
        cluster.stop()
