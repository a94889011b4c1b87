"""Tools, tool choice and response formats in the OpenAI wire format (gateway/openai/tools.py):
what a node would have to refuse is a 400 naming the parameter, before any node is asked; what
is accepted becomes the agent's tools, tool choice and output constraint."""

from __future__ import annotations

import json
from typing import Any

import pytest

from cluster.errors import InvalidRequest
from cluster.gateway.openai.parse import ChatCompletionRequest, parse_request, to_generate_request
from node_agent.types import (
    CONSTRAINTS,
    TOOLS,
    Constraint,
    ConstraintKind,
    GenerateRequest,
    Tool,
    ToolChoice,
    ToolChoiceMode,
)

WEATHER_ARGS = {
    "type": "object",
    "properties": {"city": {"type": "string"}},
    "required": ["city"],
    "additionalProperties": False,
}


def function(name: str = "get_weather", **fields: Any) -> dict[str, Any]:
    return {"type": "function", "function": {"name": name, **fields}}


WEATHER = function(description="The weather in a city", parameters=WEATHER_ARGS, strict=True)


def chat(**fields: Any) -> dict[str, Any]:
    return {"model": "demo", "messages": [{"role": "user", "content": "hi"}], **fields}


def generate(**fields: Any) -> GenerateRequest:
    return to_generate_request(
        parse_request(ChatCompletionRequest, json.dumps(chat(**fields))), "r"
    )


def rejected(**fields: Any) -> InvalidRequest:
    with pytest.raises(InvalidRequest) as info:
        parse_request(ChatCompletionRequest, json.dumps(chat(**fields)))
    return info.value


# --- accepted --------------------------------------------------------------------------------


def test_function_tools_become_the_agents_tools() -> None:
    gen = generate(tools=[WEATHER, function("now")], parallel_tool_calls=False)
    weather, now = gen.tools
    assert weather == Tool(
        name="get_weather",
        description="The weather in a city",
        parameters=json.dumps(WEATHER_ARGS),
        strict=True,
    )
    assert now == Tool(name="now")  # no schema: the agent's default, an empty object
    assert gen.tool_choice == ToolChoice(ToolChoiceMode.AUTO) and not gen.parallel_tool_calls
    assert gen.needs() == {TOOLS}


@pytest.mark.parametrize(
    ("choice", "expected"),
    [
        ("auto", ToolChoice(ToolChoiceMode.AUTO)),
        ("none", ToolChoice(ToolChoiceMode.NONE)),
        ("required", ToolChoice(ToolChoiceMode.REQUIRED)),
        (
            {"type": "function", "function": {"name": "get_weather"}},
            ToolChoice(ToolChoiceMode.NAMED, "get_weather"),
        ),
    ],
)
def test_tool_choices(choice: Any, expected: ToolChoice) -> None:
    gen = generate(tools=[WEATHER], tool_choice=choice)
    assert gen.tool_choice == expected
    forced = expected.mode in (ToolChoiceMode.REQUIRED, ToolChoiceMode.NAMED)
    assert (CONSTRAINTS in gen.needs()) == forced


def test_response_formats_become_constraints() -> None:
    assert generate(response_format={"type": "text"}).constraint is None
    assert generate(response_format={"type": "json_object"}).constraint == Constraint(
        ConstraintKind.JSON_OBJECT
    )
    schema = {"type": "object", "properties": {"answer": {"type": "integer"}}}
    fmt = {"type": "json_schema", "json_schema": {"name": "a", "schema": schema, "strict": True}}
    gen = generate(response_format=fmt)
    assert gen.constraint is not None and gen.constraint.kind is ConstraintKind.JSON_SCHEMA
    assert json.loads(gen.constraint.text) == schema
    assert gen.needs() == {CONSTRAINTS}
    # OpenAI wants a name; nothing here depends on it.
    unnamed = generate(response_format={"type": "json_schema", "json_schema": {"schema": schema}})
    assert unnamed.constraint == gen.constraint


def test_a_schema_in_its_own_dialect_is_checked_against_that_dialect() -> None:
    draft7 = {"$schema": "http://json-schema.org/draft-07/schema#", "type": "object"}
    assert generate(tools=[function(parameters=draft7)]).tools[0].parameters == json.dumps(draft7)


def test_empty_tools_and_a_free_choice_without_tools_are_harmless() -> None:
    gen = generate(tools=[], tool_choice="none")
    assert gen.tools == () and gen.needs() == frozenset()


# --- refused, each with its parameter -----------------------------------------------------------

BAD = [
    (
        {"tools": [function(parameters={"type": "objekt"})]},
        "tools.0.function.parameters",
        "invalid_schema",
        "Invalid schema for function 'get_weather'",
    ),
    (
        {"tools": [WEATHER, function("f", parameters={"properties": []})]},
        "tools.1.function.parameters",
        "invalid_schema",
        "at $.properties",
    ),
    (
        {"tools": [function(parameters="{}")]},
        "tools.0.function.parameters",
        "invalid_type",
        "",
    ),
    (
        {"tools": [function(strict=True)]},
        "tools.0.function.parameters",
        "missing_required_parameter",
        "strict function 'get_weather' needs a parameters schema",
    ),
    ({"tools": [WEATHER, WEATHER]}, "tools", "invalid_value", "duplicate function name"),
    ({"tools": [function("")]}, "tools.0.function.name", "invalid_value", ""),
    ({"tools": [{"type": "function"}]}, "tools.0.function", "missing_required_parameter", ""),
    (
        {"tools": [{"type": "custom", "custom": {"name": "apply_patch"}}]},
        "tools.0.type",
        "unsupported_value",
        "'custom' is not supported",
    ),
    (
        {"tool_choice": "required"},
        "tool_choice",
        "invalid_value",
        "only allowed when 'tools' are specified",
    ),
    (
        {"tools": [], "tool_choice": {"type": "function", "function": {"name": "get_weather"}}},
        "tool_choice",
        "invalid_value",
        "only allowed when 'tools' are specified",
    ),
    (
        {"tools": [WEATHER], "tool_choice": {"type": "function", "function": {"name": "other"}}},
        "tool_choice",
        "invalid_value",
        "function 'other' is not among the tools",
    ),
    ({"tools": [WEATHER], "tool_choice": "always"}, "tool_choice", "invalid_value", "'auto'"),
    ({"tools": [WEATHER], "tool_choice": 1}, "tool_choice", "invalid_type", ""),
    (
        {"tools": [WEATHER], "tool_choice": {"type": "function", "function": {}}},
        "tool_choice",
        "missing_required_parameter",
        "function.name",
    ),
    (
        {"tools": [WEATHER], "tool_choice": {"type": "allowed_tools", "allowed_tools": {}}},
        "tool_choice",
        "unsupported_value",
        "'allowed_tools'",
    ),
    ({"parallel_tool_calls": "yes"}, "parallel_tool_calls", "invalid_type", ""),
    (
        {
            "response_format": {
                "type": "json_schema",
                "json_schema": {"name": "a", "schema": {"type": 5}},
            }
        },
        "response_format.json_schema.schema",
        "invalid_schema",
        "Invalid schema for response_format 'a'",
    ),
    (
        {"response_format": {"type": "json_schema", "json_schema": {"name": "a"}}},
        "response_format.json_schema.schema",
        "missing_required_parameter",
        "Missing required parameter",
    ),
    (
        {"response_format": {"type": "json_schema"}},
        "response_format.json_schema",
        "missing_required_parameter",
        "needs a json_schema object",
    ),
    ({"response_format": {"type": "yaml"}}, "response_format.type", "invalid_value", ""),
    (
        {"messages": [{"role": "tool", "content": "42"}]},
        "messages.0.tool_call_id",
        "missing_required_parameter",
        "tool_call_id",
    ),
    (
        {"messages": [{"role": "assistant", "tool_calls": [{"id": "c", "function": {}}]}]},
        "messages.0.tool_calls.0.function.name",
        "missing_required_parameter",
        "",
    ),
    (
        {
            "messages": [
                {
                    "role": "assistant",
                    "tool_calls": [{"id": "c", "function": {"name": "f", "arguments": 5}}],
                }
            ]
        },
        "messages.0.tool_calls.0.function.arguments",
        "invalid_type",
        "",
    ),
]


@pytest.mark.parametrize(("fields", "param", "code", "says"), BAD)
def test_bad_tools_and_formats_are_a_400_naming_the_param(
    fields: dict[str, Any], param: str, code: str, says: str
) -> None:
    error = rejected(**fields)
    assert (error.status, error.param, error.code) == (400, param, code)
    assert says in error.message
