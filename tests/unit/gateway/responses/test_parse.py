"""`POST /v1/responses` bodies (gateway/responses/parse.py and tools.py): each input item kind,
tools flat and custom, tool choice, text formats, and the 400s of a stateless endpoint."""

from __future__ import annotations

import json
from typing import Any

import pytest

from cluster.errors import InvalidRequest
from cluster.gateway.responses.parse import (
    ResponsesRequest,
    parse_response_request,
    to_generate_request,
)
from cluster.gateway.responses.tools import CUSTOM_PARAMETERS
from node_agent.types import (
    ChatMessage,
    Constraint,
    ConstraintKind,
    GenerateRequest,
    Sampling,
    Tool,
    ToolCall,
    ToolChoice,
    ToolChoiceMode,
)

WEATHER = {
    "type": "function",
    "name": "get_weather",
    "description": "The weather in a city.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    "strict": True,
}
PATCH = {
    "type": "custom",
    "name": "apply_patch",
    "description": "Edit files.",
    "format": {"type": "grammar", "syntax": "lark", "definition": 'start: "*** Begin Patch"'},
}


def parsed(**body: Any) -> ResponsesRequest:
    return parse_response_request(json.dumps({"model": "demo", **body}))


def generate(**body: Any) -> GenerateRequest:
    return to_generate_request(parsed(**body), "r1")


def refused(**body: Any) -> InvalidRequest:
    with pytest.raises(InvalidRequest) as caught:
        parsed(**body)
    return caught.value


def test_a_string_input_is_one_user_message() -> None:
    req = generate(input="Hi", max_output_tokens=9, temperature=0.5, top_p=0.9)
    assert req.messages == (ChatMessage("user", "Hi"),)
    assert req.sampling == Sampling(max_tokens=9, temperature=0.5, top_p=0.9)
    assert req.tools == () and req.tool_choice == ToolChoice() and req.constraint is None
    assert req.template_options == "" and req.top_logprobs is None


def test_instructions_and_developer_messages_open_the_conversation_as_one_system_turn() -> None:
    req = generate(
        instructions="Be brief.",
        input=[
            {"type": "message", "role": "developer", "content": "Sandboxed."},
            {"role": "user", "content": [{"type": "input_text", "text": "Hi"}]},  # no type
            {"role": "system", "content": "Later."},
        ],
    )
    assert req.messages == (
        ChatMessage("system", "Be brief.\n\nSandboxed."),
        ChatMessage("user", "Hi"),
        ChatMessage("system", "Later."),
    )


def test_assistant_text_parts_and_refusals() -> None:
    content = [
        {"type": "output_text", "text": "Sure.", "annotations": []},
        {"type": "refusal", "refusal": "Not that."},
    ]
    req = generate(input=[{"type": "message", "role": "assistant", "content": content}])
    assert req.messages == (ChatMessage("assistant", "Sure.\nNot that."),)


def test_calls_join_the_assistant_message_before_them_and_outputs_are_named() -> None:
    req = generate(
        input=[
            {"role": "user", "content": "Weather?"},
            {
                "type": "reasoning",
                "summary": [],
                "content": [{"type": "reasoning_text", "text": "Look"}],
            },
            {"type": "message", "role": "assistant", "content": "Checking."},
            {"type": "function_call", "call_id": "c1", "name": "get_weather", "arguments": "{}"},
            {
                "type": "function_call",
                "call_id": "c2",
                "name": "get_weather",
                "arguments": {"a": 1},
            },
            {"type": "function_call_output", "call_id": "c1", "output": "Sunny"},
            {
                "type": "function_call_output",
                "call_id": "c2",
                "output": [{"type": "input_text", "text": "Rain"}],
            },
        ],
        tools=[WEATHER],
    )
    calls = (
        ToolCall(id="c1", name="get_weather", arguments="{}"),
        ToolCall(id="c2", name="get_weather", arguments='{"a": 1}'),
    )
    assert (req.messages or ())[1:] == (
        ChatMessage("assistant", "Checking.", tool_calls=calls, reasoning="Look"),
        ChatMessage("tool", "Sunny", tool_call_id="c1", name="get_weather"),
        ChatMessage("tool", "Rain", tool_call_id="c2", name="get_weather"),
    )


def test_calls_after_a_tool_output_open_a_new_assistant_turn_with_their_reasoning() -> None:
    call = {"type": "function_call", "call_id": "c1", "name": "f", "arguments": "{}"}
    thought = {"type": "reasoning", "summary": [{"type": "summary_text", "text": "Summed up"}]}
    req = generate(
        input=[
            {"role": "user", "content": "Go"},
            thought,
            call,
            {"type": "function_call_output", "call_id": "c1", "output": "ok"},
            {**call, "call_id": "c2"},
        ]
    )
    assert [(m.role, len(m.tool_calls), m.reasoning) for m in req.messages or ()] == [
        ("user", 0, ""),
        ("assistant", 1, "Summed up"),
        ("tool", 0, ""),
        ("assistant", 1, ""),
    ]


def test_reasoning_before_a_user_turn_is_dropped_and_encrypted_content_ignored() -> None:
    req = generate(
        input=[
            {"type": "reasoning", "summary": [], "encrypted_content": "opaque"},
            {"role": "user", "content": "Hi"},
            {
                "type": "reasoning",
                "summary": [],
                "content": [{"type": "reasoning_text", "text": "x"}],
            },
            {"role": "user", "content": "Again"},
        ]
    )
    assert req.messages == (ChatMessage("user", "Hi"), ChatMessage("user", "Again"))


def test_custom_tools_become_functions_taking_their_input() -> None:
    req = parsed(
        input=[
            {"type": "custom_tool_call", "call_id": "p1", "name": "apply_patch", "input": "*** B"},
            {"type": "custom_tool_call_output", "call_id": "p1", "output": "Done!"},
        ],
        tools=[WEATHER, PATCH, {"type": "custom", "name": "free"}],
    )
    gen = to_generate_request(req, "r1")
    assert req.custom_tools == {"apply_patch", "free"}
    assert gen.tools[0] == Tool(
        name="get_weather",
        description="The weather in a city.",
        parameters=json.dumps(WEATHER["parameters"]),
        strict=True,
    )
    patch = gen.tools[1]
    assert patch.name == "apply_patch" and patch.parameters == CUSTOM_PARAMETERS
    assert patch.description.startswith("Edit files.\n\nThe input must match this lark grammar")
    assert patch.grammar == Constraint(ConstraintKind.LARK, PATCH["format"]["definition"])
    assert gen.tools[2] == Tool(name="free", parameters=CUSTOM_PARAMETERS)
    assert gen.messages == (
        ChatMessage(
            "assistant",
            "",
            tool_calls=(ToolCall(id="p1", name="apply_patch", arguments='{"input": "*** B"}'),),
        ),
        ChatMessage("tool", "Done!", tool_call_id="p1", name="apply_patch"),
    )


@pytest.mark.parametrize(
    ("choice", "expected"),
    [
        ("auto", ToolChoice()),
        ("none", ToolChoice(ToolChoiceMode.NONE)),
        ("required", ToolChoice(ToolChoiceMode.REQUIRED)),
        (
            {"type": "function", "name": "get_weather"},
            ToolChoice(ToolChoiceMode.NAMED, "get_weather"),
        ),
        (
            {"type": "custom", "name": "apply_patch"},
            ToolChoice(ToolChoiceMode.NAMED, "apply_patch"),
        ),
    ],
)
def test_tool_choice(choice: Any, expected: ToolChoice) -> None:
    req = parsed(input="Hi", tools=[WEATHER, PATCH], tool_choice=choice, parallel_tool_calls=False)
    gen = to_generate_request(req, "r1")
    assert gen.tool_choice == expected and not gen.parallel_tool_calls
    assert req.echo()["tool_choice"] == choice


@pytest.mark.parametrize(
    ("choice", "tools", "says"),
    [
        ({"type": "function", "name": "nope"}, [WEATHER], "'nope' is not among the tools"),
        ({"type": "function", "name": "apply_patch"}, [PATCH], "not among the tools"),
        ("required", None, "only allowed when 'tools' are specified"),
        ({"type": "file_search"}, [WEATHER], "'file_search' is not supported"),
        ("sometimes", [WEATHER], "Input should be"),
    ],
)
def test_a_tool_choice_naming_no_tool_is_a_400(choice: Any, tools: Any, says: str) -> None:
    error = refused(input="Hi", tools=tools, tool_choice=choice)
    assert error.param == "tool_choice" and says in error.message


def test_unknown_tools_are_refused_by_type() -> None:
    error = refused(input="Hi", tools=[WEATHER, {"type": "teleport"}])
    assert error.param == "tools.1" and error.code == "unsupported_value"
    assert "'teleport'" in error.message


def test_hosted_tools_are_left_out_and_a_namespace_offers_its_tools() -> None:
    child = {"type": "function", "name": "close_agent", "parameters": {"type": "object"}}
    namespace = {"type": "namespace", "name": "multi_agent_v1", "tools": [child]}
    tools = [WEATHER, {"type": "web_search", "external_web_access": False}, namespace]
    request = to_generate_request(
        parse_response_request(json.dumps({"model": "demo", "input": "Hi", "tools": tools})), "r1"
    )
    assert [t.name for t in request.tools] == ["get_weather", "close_agent"]


def test_tool_names_must_differ() -> None:
    error = refused(input="Hi", tools=[WEATHER, {"type": "custom", "name": "get_weather"}])
    assert error.param == "tools" and "duplicate" in error.message


def test_an_invalid_tool_schema_is_a_400_naming_it() -> None:
    broken = {**WEATHER, "parameters": {"type": "objekt"}}
    error = refused(input="Hi", tools=[broken])
    assert (error.param, error.code) == ("tools.0.parameters", "invalid_schema")
    grammar = {**PATCH, "format": {"type": "grammar", "syntax": "lark"}}
    assert refused(input="Hi", tools=[grammar]).param == "tools.0.format.definition"


def test_text_formats_become_constraints() -> None:
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}}
    fmt = {"type": "json_schema", "name": "answer", "schema": schema, "strict": True}
    assert generate(input="Hi", text={"format": fmt}).constraint == Constraint(
        ConstraintKind.JSON_SCHEMA, json.dumps(schema)
    )
    as_json = generate(input="Hi", text={"format": {"type": "json_object"}, "verbosity": "low"})
    assert as_json.constraint == Constraint(ConstraintKind.JSON_OBJECT)
    assert generate(input="Hi", text={"format": {"type": "text"}}).constraint is None
    assert parsed(input="Hi", text={"format": fmt}).echo()["text"]["format"]["schema"] == schema


def test_an_invalid_text_schema_is_a_400_naming_it() -> None:
    fmt = {"type": "json_schema", "name": "answer", "schema": {"type": 3}}
    error = refused(input="Hi", text={"format": fmt})
    assert (error.param, error.code) == ("text.format.schema", "invalid_schema")
    missing = refused(input="Hi", text={"format": {"type": "json_schema", "name": "a"}})
    assert missing.param == "text.format" and "needs a schema" in missing.message


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("previous_response_id", "resp_123"),
        ("store", True),
        ("conversation", "conv_1"),
        ("background", True),
    ],
)
def test_what_needs_stored_state_is_a_400(field: str, value: Any) -> None:
    error = refused(input="Hi", **{field: value})
    assert error.param == field and error.code == "unsupported_value"
    if field != "background":
        assert "stateless" in error.message


def test_store_false_and_the_knobs_codex_sends_are_accepted() -> None:
    req = parsed(
        input="Hi",
        store=False,
        stream=True,
        include=["reasoning.encrypted_content"],
        prompt_cache_key="session-1",
        metadata={"k": "v"},
        service_tier="auto",
        truncation="auto",
        user="u",
        reasoning={"effort": "high", "summary": "auto"},
    )
    assert req.stream and to_generate_request(req, "r").template_options == (
        '{"enable_thinking": true}'
    )
    assert req.echo()["store"] is False and req.echo()["metadata"] == {"k": "v"}


@pytest.mark.parametrize(
    ("effort", "options"),
    [("none", '{"enable_thinking": false}'), ("minimal", '{"enable_thinking": false}'), (None, "")],
)
def test_reasoning_effort_switches_thinking(effort: str | None, options: str) -> None:
    assert generate(input="Hi", reasoning={"effort": effort}).template_options == options


def test_logprobs_are_asked_for_by_include_or_top_logprobs() -> None:
    include = ["message.output_text.logprobs"]
    assert generate(input="Hi", include=include).top_logprobs == 0
    assert generate(input="Hi", include=include, top_logprobs=3).top_logprobs == 3
    assert generate(input="Hi", top_logprobs=2).top_logprobs == 2
    assert refused(input="Hi", top_logprobs=21).param == "top_logprobs"


@pytest.mark.parametrize(
    ("item", "param", "says"),
    [
        (
            {"role": "user", "content": [{"type": "input_image", "image_url": "x"}]},
            "input.0.content.0",
            "'input_image'",
        ),
        (
            {"role": "user", "content": [{"type": "input_file", "file_id": "f"}]},
            "input.0.content.0",
            "'input_file'",
        ),
        ({"type": "item_reference", "id": "msg_1"}, "input.0", "stateless"),
        ({"type": "web_search_call", "id": "ws_1"}, "input.0", "'web_search_call'"),
        ({"type": "function_call", "name": "f", "arguments": "{}"}, "input.0.call_id", "call_id"),
        ({"type": "message", "role": "tool", "content": "x"}, "input.0.role", "role"),
    ],
)
def test_bad_items_are_400s_naming_the_item(item: Any, param: str, says: str) -> None:
    error = refused(input=[item])
    assert error.param == param and says in error.message


def test_bodies_that_are_not_requests() -> None:
    assert refused(input=[]).param == "input"
    assert refused().code == "missing_required_parameter"
    with pytest.raises(InvalidRequest, match="not valid JSON"):
        parse_response_request(b"{")


def test_key_parts_put_the_tools_and_instructions_first() -> None:
    req = parsed(
        instructions="Be brief.",
        input=[
            {"role": "user", "content": "Hi"},
            {"type": "function_call", "call_id": "c1", "name": "get_weather", "arguments": "{}"},
        ],
        tools=[WEATHER],
    )
    parts = req.key_parts()
    assert parts[0][0] == "tools" and "get_weather" in parts[0][1]
    assert parts[1:] == [("system", "Be brief."), ("user", "Hi"), ("assistant", "get_weather{}")]
    # A later turn shares the earlier turns' parts, so it routes to the same prompt cache.
    longer = parsed(
        instructions="Be brief.",
        input=[
            {"role": "user", "content": "Hi"},
            {"type": "function_call", "call_id": "c1", "name": "get_weather", "arguments": "{}"},
            {"type": "function_call_output", "call_id": "c1", "output": "Sunny"},
        ],
        tools=[WEATHER],
    )
    assert longer.key_parts()[: len(parts)] == parts
