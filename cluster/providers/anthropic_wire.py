"""The internal request, as an Anthropic-kind provider reads it (Messages); its stream, as events.

Pure: no I/O. The counterpart of openai_wire.py for `--kind anthropic`: system messages become
the `system` text, tool calls `tool_use` blocks and tool results `tool_result` blocks in a user
turn; the request is always streamed, and `EventReader` turns Anthropic's stream events back into
the events a node would have sent.
"""

from __future__ import annotations

import json
from typing import Any

from cluster.errors import InvalidRequest, NoCapacity
from node_agent.types import (
    ChatMessage,
    Delta,
    Finished,
    GenerateRequest,
    ReasoningDelta,
    TokenEvent,
    ToolCallDelta,
    ToolChoiceMode,
    Usage,
)

VERSION = "2023-06-01"  # the anthropic-version header every Messages request carries
STOPS = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "tool_use": "tool_calls",
}


def path(request: GenerateRequest) -> str:
    """The provider's endpoint, under its base URL: Messages, whatever the client's dialect."""
    return "/messages"


def headers(api_key: str) -> dict[str, str]:
    """The key goes in `x-api-key`, with the API version."""
    return {"x-api-key": api_key, "anthropic-version": VERSION}


def reader() -> EventReader:
    """A reader for one answer's stream."""
    return EventReader()


def request_body(request: GenerateRequest, remote_model: str) -> dict[str, Any]:
    """`request` as Messages JSON, for `remote_model`, streamed."""
    s = request.sampling
    body: dict[str, Any] = {
        "model": remote_model,
        "stream": True,
        "max_tokens": max(s.max_tokens, 1),
        "temperature": min(s.temperature, 1.0),
        "top_p": s.top_p,
    }
    if s.stop:
        body["stop_sequences"] = list(s.stop)
    if request.constraint is not None:
        raise InvalidRequest("output constraints cannot be sent to an anthropic provider")
    messages = request.messages
    if messages is None:
        messages = (ChatMessage(role="user", content=request.text or ""),)
    system = "\n".join(m.content for m in messages if m.role == "system")
    if system:
        body["system"] = system
    body["messages"] = _turns([m for m in messages if m.role != "system"])
    if request.tools:
        body["tools"] = [
            {"name": t.name, "description": t.description, "input_schema": json.loads(t.parameters)}
            for t in request.tools
        ]
        body["tool_choice"] = _tool_choice(request)
    return body


def _turns(messages: list[ChatMessage]) -> list[dict[str, Any]]:
    """Alternating user and assistant turns of content blocks (a tool's result is the user's)."""
    turns: list[dict[str, Any]] = []
    for m in messages:
        role = "assistant" if m.role == "assistant" else "user"
        blocks = _blocks(m)
        if turns and turns[-1]["role"] == role:
            turns[-1]["content"].extend(blocks)
        else:
            turns.append({"role": role, "content": blocks})
    return turns


def _blocks(m: ChatMessage) -> list[dict[str, Any]]:
    if m.role == "tool":
        text = [{"type": "text", "text": m.content}] if m.content else []
        return [{"type": "tool_result", "tool_use_id": m.tool_call_id, "content": text}]
    blocks: list[dict[str, Any]] = [{"type": "text", "text": m.content}] if m.content else []
    for call in m.tool_calls:
        arguments = json.loads(call.arguments or "{}")
        blocks.append({"type": "tool_use", "id": call.id, "name": call.name, "input": arguments})
    return blocks


def _tool_choice(request: GenerateRequest) -> dict[str, Any]:
    choice = request.tool_choice
    kind = {
        ToolChoiceMode.AUTO: "auto",
        ToolChoiceMode.NONE: "none",
        ToolChoiceMode.REQUIRED: "any",
        ToolChoiceMode.NAMED: "tool",
    }[choice.mode]
    out: dict[str, Any] = {"type": kind}
    if choice.mode is ToolChoiceMode.NAMED:
        out["name"] = choice.name
    if not request.parallel_tool_calls and choice.mode is not ToolChoiceMode.NONE:
        out["disable_parallel_tool_use"] = True
    return out


class EventReader:
    """Anthropic's stream events, read one by one into the events a node would have sent."""

    def __init__(self) -> None:
        self.stop_reason = ""
        self.prompt = self.cached = self.completion = 0
        self._tools: dict[int, int] = {}  # content block index -> tool call index

    def read(self, event: dict[str, Any]) -> list[TokenEvent]:
        """The events in one stream event; an `error` event raises (a 503 with its message)."""
        kind = event.get("type")
        if kind == "message_start":
            self._usage(event.get("message", {}).get("usage") or {})
        elif kind == "content_block_start":
            return self._start(int(event.get("index", 0)), event.get("content_block") or {})
        elif kind == "content_block_delta":
            return self._delta(int(event.get("index", 0)), event.get("delta") or {})
        elif kind == "content_block_stop" and (i := event.get("index")) in self._tools:
            return [ToolCallDelta(index=self._tools[i], done=True)]
        elif kind == "message_delta":
            self.stop_reason = (event.get("delta") or {}).get("stop_reason") or self.stop_reason
            self._usage(event.get("usage") or {})
        elif kind == "error":
            message = (event.get("error") or {}).get("message", "the provider failed")
            raise NoCapacity(str(message), retry_after=5)
        return []

    def _usage(self, usage: dict[str, Any]) -> None:
        cached = int(usage.get("cache_read_input_tokens") or 0)
        if "input_tokens" in usage:
            self.prompt = int(usage["input_tokens"] or 0) + cached
            self.cached = cached
        self.completion = int(usage.get("output_tokens") or self.completion)

    def _start(self, index: int, block: dict[str, Any]) -> list[TokenEvent]:
        if block.get("type") != "tool_use":
            return []
        call = self._tools[index] = len(self._tools)
        name, id_ = str(block.get("name") or ""), str(block.get("id") or "")
        return [ToolCallDelta(index=call, id=id_, name=name, tokens=1)]

    def _delta(self, index: int, delta: dict[str, Any]) -> list[TokenEvent]:
        kind = delta.get("type")
        if kind == "text_delta" and delta.get("text"):
            return [Delta(text=str(delta["text"]), tokens=1)]
        if kind == "thinking_delta" and delta.get("thinking"):
            return [ReasoningDelta(text=str(delta["thinking"]), tokens=1)]
        if kind == "input_json_delta" and index in self._tools:
            arguments = str(delta.get("partial_json") or "")
            return [ToolCallDelta(index=self._tools[index], arguments=arguments, tokens=1)]
        return []

    def end(self, duration_s: float, ttft_s: float) -> list[TokenEvent | Finished]:
        """Finished, with the usage the provider reported."""
        usage = Usage(
            prompt_tokens=self.prompt,
            completion_tokens=self.completion,
            cached_prompt_tokens=self.cached,
            ttft_seconds=ttft_s,
            decode_tokens_per_second=0.0,
            duration_seconds=duration_s,
        )
        return [Finished(finish_reason=STOPS.get(self.stop_reason, "stop"), usage=usage)]
