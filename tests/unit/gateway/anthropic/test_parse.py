"""Requests in the Anthropic Messages wire format (gateway/anthropic/parse.py and tools.py): what
is refused, with which parameter named, and what an accepted one becomes for the agent."""

from __future__ import annotations

import json
from typing import Any

import pytest

from cluster.errors import InvalidRequest
from cluster.gateway.anthropic.parse import (
    CountTokensRequest,
    MessagesRequest,
    parse_count_tokens,
    parse_messages,
    stable_system_text,
    to_generate_request,
)
from node_agent.types import (
    CONSTRAINTS,
    TOOLS,
    ChatMessage,
    Constraint,
    ConstraintKind,
    Sampling,
    Tool,
    ToolCall,
    ToolChoice,
    ToolChoiceMode,
)

USER = [{"role": "user", "content": "hi"}]
SCHEMA = {"type": "object", "properties": {"path": {"type": "string"}}, "required": ["path"]}
READ = {"name": "Read", "description": "Read a file", "input_schema": SCHEMA}
BILLING = "x-anthropic-billing-header: cc_version=2.1.126.abc; cc_entrypoint=cli; cch=1f2e3;"


def body(**fields: Any) -> dict[str, Any]:
    return {"model": "demo", "max_tokens": 64, "messages": USER, **fields}


def parsed(**fields: Any) -> MessagesRequest:
    return parse_messages(json.dumps(body(**fields)))


def converted(**fields: Any) -> Any:
    return to_generate_request(parsed(**fields), "r1")


def rejected(raw: dict[str, Any] | str) -> InvalidRequest:
    with pytest.raises(InvalidRequest) as info:
        parse_messages(raw if isinstance(raw, str) else json.dumps(raw))
    return info.value


def turns(*messages: dict[str, Any]) -> list[dict[str, Any]]:
    return list(messages)


def user(content: Any) -> dict[str, Any]:
    return {"role": "user", "content": content}


def assistant(content: Any) -> dict[str, Any]:
    return {"role": "assistant", "content": content}


def tool_use(call_id: str, name: str, args: dict[str, Any]) -> dict[str, Any]:
    return {"type": "tool_use", "id": call_id, "name": name, "input": args}


def tool_result(call_id: str, content: Any, **more: Any) -> dict[str, Any]:
    return {"type": "tool_result", "tool_use_id": call_id, "content": content, **more}


# --- request validation -------------------------------------------------------------------------

REJECTS = [
    ({"model": "demo", "messages": USER}, "max_tokens", "missing_required_parameter"),
    (body(max_tokens=0), "max_tokens", "invalid_value"),
    ({"max_tokens": 5, "messages": USER}, "model", "missing_required_parameter"),
    (body(messages=[]), "messages", "invalid_value"),
    (body(messages=[{"role": "tool", "content": "x"}]), "messages.0.role", "invalid_value"),
    (body(messages=[user(5)]), "messages.0.content", "invalid_type"),
    (
        body(messages=[user([{"type": "image", "source": {"type": "base64", "data": "x"}}])]),
        "messages.0.content.0",
        "unsupported_value",
    ),
    (
        body(messages=[user([{"type": "document", "source": {}}])]),
        "messages.0.content.0",
        "unsupported_value",
    ),
    (
        body(messages=[user([{"text": "no type"}])]),
        "messages.0.content.0",
        "missing_required_parameter",
    ),
    (body(messages=[user(["text"])]), "messages.0.content.0", "invalid_type"),
    (body(messages=[user([{"type": []}])]), "messages.0.content.0", "unsupported_value"),
    (
        body(messages=[user([{"type": "text", "text": "a"}, {"type": "text"}])]),
        "messages.0.content.1.text",
        "missing_required_parameter",
    ),
    (
        body(messages=[assistant([{"type": "tool_use", "id": "t", "name": "Read"}])]),
        "messages.0.content.0.input",
        "missing_required_parameter",
    ),
    (
        body(messages=[user([tool_result("t", [{"type": "image", "source": {}}])])]),
        "messages.0.content.0.content.0",
        "unsupported_value",
    ),
    (body(messages=[user([tool_use("t", "Read", {})])]), "messages.0.content", "invalid_value"),
    (
        body(messages=[assistant([tool_result("t", "x")])]),
        "messages.0.content",
        "invalid_value",
    ),
    (body(system=[{"type": "image", "source": {}}]), "system.0", "unsupported_value"),
    (
        body(tools=[{"name": "Read", "input_schema": {"type": 5}}]),
        "tools.0.input_schema",
        "invalid_schema",
    ),
    (body(tools=[{"name": "Read"}]), "tools.0.input_schema", "missing_required_parameter"),
    (body(tools=[{"name": "", "input_schema": SCHEMA}]), "tools.0.name", "invalid_value"),
    (
        body(tools=[{"type": "web_search_20250305", "name": "web_search", "max_uses": 5}]),
        "tools.0.type",
        "unsupported_value",
    ),
    (body(tools=[READ, READ]), "tools", "invalid_value"),
    (
        body(tool_choice={"type": "tool", "name": "Write"}, tools=[READ]),
        "tool_choice",
        "invalid_value",
    ),
    (body(tool_choice={"type": "any"}), "tool_choice", "invalid_value"),
    (
        body(tool_choice={"type": "tool"}, tools=[READ]),
        "tool_choice.name",
        "missing_required_parameter",
    ),
    (body(tool_choice={"type": "required"}), "tool_choice.type", "invalid_value"),
    (body(tool_choice="auto"), "tool_choice", "invalid_type"),
    (body(thinking={"type": "sometimes"}), "thinking.type", "invalid_value"),
    (body(temperature=1.5), "temperature", "invalid_value"),
    (body(top_p=0), "top_p", "invalid_value"),
    (body(top_k=-1), "top_k", "invalid_value"),
    (body(stop_sequences=["a", "b", "c", "d", "e"]), "stop_sequences", "invalid_value"),
    (body(stop_sequences=[""]), "stop_sequences.0", "invalid_value"),
    (
        body(output_config={"format": {"type": "json_schema", "schema": {"type": "nope"}}}),
        "output_config.format.schema",
        "invalid_schema",
    ),
]


@pytest.mark.parametrize(("raw", "param", "code"), REJECTS)
def test_bad_requests_name_the_parameter(raw: dict[str, Any], param: str, code: str) -> None:
    error = rejected(raw)
    assert (error.param, error.code) == (param, code), error.message


def test_refusals_say_what_is_not_supported() -> None:
    image = body(messages=[user([{"type": "image", "source": {}}])])
    assert "'image' is not supported" in rejected(image).message
    server = body(tools=[{"type": "web_search_20250305", "name": "web_search"}])
    assert "'web_search_20250305' is not supported" in rejected(server).message
    schema = body(tools=[{"name": "Bash", "input_schema": {"type": 5}}])
    assert "tool 'Bash'" in rejected(schema).message
    assert rejected(body(tool_choice={"type": "tool", "name": "Write"}, tools=[READ])).message == (
        "tool_choice: tool 'Write' is not among the tools"
    )


def test_a_body_that_is_no_json_object_is_refused() -> None:
    assert rejected("{").code == "invalid_json"
    assert rejected("[]").code == "invalid_type"


def test_what_claude_code_sends_is_accepted() -> None:
    req = parsed(
        system=[
            {"type": "text", "text": BILLING},
            {
                "type": "text",
                "text": "You are Claude Code.",
                "cache_control": {"type": "ephemeral"},
            },
        ],
        messages=[user([{"type": "text", "text": "hi", "cache_control": {"type": "ephemeral"}}])],
        tools=[{**READ, "cache_control": {"type": "ephemeral"}}],
        tool_choice={"type": "auto"},
        thinking={"type": "enabled", "budget_tokens": 31999},
        metadata={"user_id": "user_abc_account__session_123"},
        context_management={"edits": [{"type": "clear_thinking_20251015", "keep": "all"}]},
        service_tier="auto",
        temperature=1,
        top_k=40,
        stream=True,
    )
    assert req.stream and req.max_tokens == 64
    assert to_generate_request(req, "r1").messages == (
        ChatMessage("system", "You are Claude Code."),
        ChatMessage("user", "hi"),
    )


# --- conversion ---------------------------------------------------------------------------------


def test_a_plain_request_keeps_the_agents_defaults() -> None:
    request = converted()
    assert request.messages == (ChatMessage("user", "hi"),)
    assert request.sampling == Sampling(max_tokens=64)
    assert request.tools == () and request.tool_choice == ToolChoice()
    assert request.parallel_tool_calls
    assert request.template_options == '{"enable_thinking": false}'  # thoughts only when asked
    assert request.constraint is None and request.top_logprobs is None
    assert request.needs() == frozenset()


def test_sampling_knobs_pass_and_top_k_is_ignored() -> None:
    request = converted(temperature=0.2, top_p=0.9, top_k=5, stop_sequences=["END", "\n\n"])
    assert request.sampling == Sampling(
        max_tokens=64, temperature=0.2, top_p=0.9, stop=("END", "\n\n")
    )


def test_a_string_system_prompt_leads() -> None:
    assert converted(system="Be brief.").messages[0] == ChatMessage("system", "Be brief.")


def test_system_blocks_are_joined_by_newlines_without_the_billing_line() -> None:
    blocks = [
        {"type": "text", "text": BILLING},
        {"type": "text", "text": "You are Claude Code."},
        {"type": "text", "text": f"Rules:\n{BILLING}\n- be brief"},
    ]
    system = converted(system=blocks).messages[0]
    assert system == ChatMessage("system", "You are Claude Code.\nRules:\n- be brief")
    # Only a line that starts with it: a prompt that merely mentions it keeps it.
    quoted = [{"type": "text", "text": f"Never print '{BILLING}'"}]
    assert converted(system=quoted).messages[0].content == f"Never print '{BILLING}'"


def test_a_system_prompt_of_only_the_billing_line_is_no_system_message() -> None:
    assert converted(system=BILLING).messages == (ChatMessage("user", "hi"),)


def test_stable_system_text_is_the_same_for_every_attribution() -> None:
    def system(line: str) -> Any:
        return parsed(system=[{"type": "text", "text": line}, {"type": "text", "text": "Rules"}])

    one, two = system(BILLING), system(BILLING.replace("1f2e3", "9a8b7"))
    assert stable_system_text(one.system or []) == stable_system_text(two.system or []) == "Rules"
    assert one.key_parts() == two.key_parts()


CONVERSATION = turns(
    user("Read a.py and b.py"),
    assistant(
        [
            {"type": "thinking", "thinking": "Both files.", "signature": ""},
            {"type": "redacted_thinking", "data": "opaque"},
            {"type": "text", "text": "Reading them."},
            tool_use("toolu_1", "Read", {"path": "a.py"}),
            tool_use("toolu_2", "Read", {"path": "b/é.py"}),
        ]
    ),
    user(
        [
            tool_result("toolu_1", "print('a')"),
            tool_result(
                "toolu_2",
                [{"type": "text", "text": "no such"}, {"type": "text", "text": "file"}],
                is_error=True,
            ),
            {"type": "text", "text": "<system-reminder>stay brief</system-reminder>"},
            {"type": "text", "text": "Now fix it."},
        ]
    ),
    assistant("Done."),
    user([tool_result("toolu_unknown", [])]),
)


def test_each_block_kind_becomes_the_agents_messages() -> None:
    assert converted(messages=CONVERSATION, tools=[READ]).messages == (
        ChatMessage("user", "Read a.py and b.py"),
        ChatMessage(
            "assistant",
            "Reading them.",
            tool_calls=(
                ToolCall(id="toolu_1", name="Read", arguments='{"path": "a.py"}'),
                ToolCall(id="toolu_2", name="Read", arguments='{"path": "b/é.py"}'),
            ),
            reasoning="Both files.",
        ),
        ChatMessage("tool", "print('a')", tool_call_id="toolu_1", name="Read"),
        ChatMessage("tool", "no such\nfile", tool_call_id="toolu_2", name="Read"),
        ChatMessage("user", "<system-reminder>stay brief</system-reminder>\nNow fix it."),
        ChatMessage("assistant", "Done."),
        ChatMessage("tool", "", tool_call_id="toolu_unknown"),
    )


def test_tools_pass_with_their_schemas() -> None:
    request = converted(
        tools=[READ, {"name": "Now", "input_schema": {"type": "object"}, "strict": True}]
    )
    assert request.tools == (
        Tool(name="Read", description="Read a file", parameters=json.dumps(SCHEMA)),
        Tool(name="Now", parameters='{"type": "object"}', strict=True),
    )
    assert TOOLS in request.needs()


@pytest.mark.parametrize(
    ("choice", "expected"),
    [
        ({"type": "auto"}, ToolChoice(ToolChoiceMode.AUTO)),
        ({"type": "any"}, ToolChoice(ToolChoiceMode.REQUIRED)),
        ({"type": "tool", "name": "Read"}, ToolChoice(ToolChoiceMode.NAMED, "Read")),
        ({"type": "none"}, ToolChoice(ToolChoiceMode.NONE)),
        ({"type": "auto", "name": "ignored"}, ToolChoice(ToolChoiceMode.AUTO)),
    ],
)
def test_tool_choice_maps_to_the_agents(choice: dict[str, Any], expected: ToolChoice) -> None:
    request = converted(tools=[READ], tool_choice=choice)
    assert request.tool_choice == expected and request.parallel_tool_calls


def test_disable_parallel_tool_use_asks_for_one_call() -> None:
    choice = {"type": "any", "disable_parallel_tool_use": True}
    request = converted(tools=[READ], tool_choice=choice)
    assert not request.parallel_tool_calls and CONSTRAINTS in request.needs()
    assert converted(
        tools=[READ], tool_choice={**choice, "disable_parallel_tool_use": False}
    ).parallel_tool_calls


@pytest.mark.parametrize(
    ("thinking", "options"),
    [
        ({"type": "enabled", "budget_tokens": 2048}, '{"enable_thinking": true}'),
        ({"type": "adaptive"}, '{"enable_thinking": true}'),
        ({"type": "disabled"}, '{"enable_thinking": false}'),
        (None, '{"enable_thinking": false}'),
    ],
)
def test_thinking_switches_the_template(thinking: dict[str, Any] | None, options: str) -> None:
    fields = {"thinking": thinking} if thinking else {}
    assert converted(**fields).template_options == options


def test_an_output_schema_is_a_constraint() -> None:
    output = {"format": {"type": "json_schema", "schema": SCHEMA}, "effort": "high"}
    constraint = converted(output_config=output).constraint
    assert constraint == Constraint(ConstraintKind.JSON_SCHEMA, json.dumps(SCHEMA))
    assert converted(output_config={"effort": "low"}).constraint is None


def test_key_parts_put_the_tools_first_and_carry_the_calls() -> None:
    parts = parsed(system="Be brief.", messages=CONVERSATION[:3], tools=[READ]).key_parts()
    assert [role for role, _ in parts] == [
        "tools",
        "system",
        "user",
        "assistant",
        "tool",
        "tool",
        "user",
    ]
    assert json.loads(parts[0][1]) == [["Read", "Read a file", SCHEMA]]
    assert parts[3][1] == 'Reading them.Read{"path": "a.py"}Read{"path": "b/é.py"}'
    # A follow-up turn shares the keys of the turns before it.
    shorter = parsed(system="Be brief.", messages=CONVERSATION[:1], tools=[READ]).key_parts()
    assert parts[: len(shorter)] == shorter


def test_key_parts_ignore_where_cache_control_sits() -> None:
    def marked(on_tool: bool) -> list[tuple[str, str]]:
        tool = {**READ, "cache_control": {"type": "ephemeral"}} if on_tool else READ
        return parsed(tools=[tool]).key_parts()

    assert marked(True) == marked(False)


# --- token counting -----------------------------------------------------------------------------


def test_a_token_count_needs_no_max_tokens_and_generates_one_token() -> None:
    raw = {"model": "demo", "messages": CONVERSATION, "system": "Be brief.", "tools": [READ]}
    req = parse_count_tokens(json.dumps(raw))
    assert isinstance(req, CountTokensRequest) and not isinstance(req, MessagesRequest)
    request = to_generate_request(req, "r2")
    assert request.sampling == Sampling(max_tokens=1)
    assert (
        request.messages
        == converted(messages=CONVERSATION, system="Be brief.", tools=[READ]).messages
    )
    assert request.tools == (
        Tool(name="Read", description="Read a file", parameters=json.dumps(SCHEMA)),
    )


def test_a_token_count_is_checked_like_a_message() -> None:
    with pytest.raises(InvalidRequest) as info:
        parse_count_tokens(json.dumps({"model": "demo", "messages": [user([{"type": "image"}])]}))
    assert info.value.param == "messages.0.content.0"


def test_a_system_turn_between_turns_is_a_reminder_in_a_user_turn() -> None:
    request = converted(
        messages=[
            {"role": "user", "content": "hi"},
            {"role": "system", "content": [{"type": "text", "text": "# Environment"}]},
        ]
    )
    assert request.messages == (
        ChatMessage("user", "hi"),
        ChatMessage("user", "<system-reminder>\n# Environment\n</system-reminder>"),
    )
