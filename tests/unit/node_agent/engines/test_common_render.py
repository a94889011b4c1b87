"""What the chat template is given: OpenAI-shaped messages with arguments as dicts, the tools,
and the client's template options (thinking off by default when a grammar holds the output)."""

from __future__ import annotations

from typing import Any

import pytest

from node_agent.engines.common import render_prompt
from node_agent.errors import InvalidRequest
from node_agent.types import ChatMessage, GenerateRequest, Tool, ToolCall


class Template:
    """Records what apply_chat_template was called with (the template itself is the engine's)."""

    def __init__(self) -> None:
        self.calls: list[tuple[list[dict[str, Any]], dict[str, Any]]] = []

    def apply_chat_template(self, messages: list[dict[str, Any]], **kw: Any) -> list[int]:
        self.calls.append((messages, kw))
        return [1, 2, 3]


CALL = ToolCall(id="call_1", name="get_weather", arguments='{"city": "Oslo"}')


def chat(**kw: Any) -> GenerateRequest:
    messages = (
        ChatMessage("user", "Weather?"),
        ChatMessage("assistant", "", (CALL,), reasoning="Look it up."),
        ChatMessage("tool", "12 C", tool_call_id="call_1", name="get_weather"),
    )
    return GenerateRequest(request_id="r", model="demo", messages=messages, **kw)


def test_history_tools_and_options_reach_the_template() -> None:
    t = Template()
    tool = Tool(name="get_weather", description="Weather now", parameters='{"type": "object"}')
    assert render_prompt(t, chat(tools=(tool,), template_options='{"enable_thinking": true}')) == [
        1,
        2,
        3,
    ]
    messages, kw = t.calls[0]
    assert messages[1]["tool_calls"] == [
        {
            "id": "call_1",
            "type": "function",
            "function": {"name": "get_weather", "arguments": {"city": "Oslo"}},
        }
    ]
    assert messages[1]["reasoning_content"] == "Look it up."
    assert messages[2] == {
        "role": "tool",
        "content": "12 C",
        "tool_call_id": "call_1",
        "name": "get_weather",
    }
    assert kw["tools"] == [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "description": "Weather now",
                "parameters": {"type": "object"},
            },
        }
    ]
    assert kw["enable_thinking"] is True and kw["add_generation_prompt"] is True


def test_a_constrained_prompt_turns_thinking_off_unless_the_client_chose() -> None:
    t = Template()
    render_prompt(t, chat(), constrained=True)
    render_prompt(t, chat(template_options='{"enable_thinking": true}'), constrained=True)
    render_prompt(t, chat())
    assert [kw.get("enable_thinking") for _, kw in t.calls] == [False, True, None]
    assert "tools" not in t.calls[2][1]


@pytest.mark.parametrize("options", ["[1]", "{nope"])
def test_template_options_must_be_a_json_object(options: str) -> None:
    with pytest.raises(InvalidRequest, match="template options"):
        render_prompt(Template(), chat(template_options=options))
