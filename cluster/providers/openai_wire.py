"""The internal request, as an OpenAI-compatible provider reads it; its stream, as internal events.

Pure: no I/O. This is what lets a request of any dialect (chat, completions, Responses, Anthropic
Messages) be rented from an `openai` provider: the dialect parsed it into a GenerateRequest, this
writes that as chat-completions (or completions, for a bare prompt) JSON, always streamed with
usage, and `ChunkReader` turns the provider's chunks back into the events a node would have sent,
which the client's dialect then encodes as it encodes a node's.
"""

from __future__ import annotations

import json
from typing import Any

from cluster.errors import InvalidRequest
from node_agent.types import (
    ChatMessage,
    ConstraintKind,
    Delta,
    Finished,
    GenerateRequest,
    ReasoningDelta,
    TokenEvent,
    Tool,
    ToolCallDelta,
    ToolChoiceMode,
    Usage,
)


def path(request: GenerateRequest) -> str:
    """The provider's endpoint for `request`, under its base URL."""
    return "/completions" if request.messages is None else "/chat/completions"


def headers(api_key: str) -> dict[str, str]:
    """The key, as a bearer token."""
    return {"authorization": f"Bearer {api_key}"}


def reader() -> ChunkReader:
    """A reader for one answer's stream."""
    return ChunkReader()


def request_body(request: GenerateRequest, remote_model: str) -> dict[str, Any]:
    """`request` as the provider's JSON, for `remote_model`, streamed with usage."""
    s = request.sampling
    body: dict[str, Any] = {
        "model": remote_model,
        "stream": True,
        "stream_options": {"include_usage": True},
        "max_tokens": s.max_tokens,
        "temperature": s.temperature,
        "top_p": s.top_p,
    }
    if s.stop:
        body["stop"] = list(s.stop)
    if s.seed is not None:
        body["seed"] = s.seed
    if request.messages is None:
        return {**body, "prompt": request.text or ""}
    body["messages"] = [_message(m) for m in request.messages]
    if request.tools:
        body["tools"] = [_tool(t) for t in request.tools]
        body["tool_choice"] = _tool_choice(request)
        body["parallel_tool_calls"] = request.parallel_tool_calls
    if request.constraint is not None:
        body["response_format"] = _response_format(request.constraint.kind, request.constraint.text)
    return body


def _message(m: ChatMessage) -> dict[str, Any]:
    out: dict[str, Any] = {"role": m.role, "content": m.content}
    if m.tool_calls:
        out["tool_calls"] = [
            {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
            for c in m.tool_calls
        ]
    if m.tool_call_id:
        out["tool_call_id"] = m.tool_call_id
    return out


def _tool(t: Tool) -> dict[str, Any]:
    function: dict[str, Any] = {"name": t.name, "parameters": json.loads(t.parameters)}
    if t.description:
        function["description"] = t.description
    if t.strict:
        function["strict"] = True
    return {"type": "function", "function": function}


def _tool_choice(request: GenerateRequest) -> Any:
    choice = request.tool_choice
    if choice.mode is ToolChoiceMode.NAMED:
        return {"type": "function", "function": {"name": choice.name}}
    return choice.mode.value


def _response_format(kind: ConstraintKind, text: str) -> dict[str, Any]:
    """OpenAI's response_format for a constraint it knows; a 400 for grammars it does not."""
    if kind is ConstraintKind.JSON_OBJECT:
        return {"type": "json_object"}
    if kind is ConstraintKind.JSON_SCHEMA:
        schema = {"name": "output", "schema": json.loads(text), "strict": True}
        return {"type": "json_schema", "json_schema": schema}
    raise InvalidRequest(f"a {kind.value} constraint cannot be sent to a provider")


class ChunkReader:
    """A provider's stream chunks, read one by one into the events a node would have sent."""

    def __init__(self) -> None:
        self.finish_reason = ""
        self.usage: dict[str, Any] | None = None
        self._calls: set[int] = set()

    def read(self, chunk: dict[str, Any]) -> list[TokenEvent]:
        """The events in one chunk (none for a usage-only chunk or an empty delta)."""
        self.usage = chunk.get("usage") or self.usage
        events: list[TokenEvent] = []
        for choice in chunk.get("choices") or []:
            self.finish_reason = choice.get("finish_reason") or self.finish_reason
            if choice.get("text"):  # completions
                events.append(Delta(text=str(choice["text"]), tokens=1))
            delta = choice.get("delta") or {}
            reasoning = delta.get("reasoning_content") or delta.get("reasoning")
            if reasoning:
                events.append(ReasoningDelta(text=str(reasoning), tokens=1))
            if delta.get("content"):
                events.append(Delta(text=str(delta["content"]), tokens=1))
            events.extend(self._tool_calls(delta.get("tool_calls") or []))
        return events

    def _tool_calls(self, calls: list[dict[str, Any]]) -> list[TokenEvent]:
        out: list[TokenEvent] = []
        for call in calls:
            index = int(call.get("index") or 0)
            function = call.get("function") or {}
            self._calls.add(index)
            out.append(
                ToolCallDelta(
                    index=index,
                    id=str(call.get("id") or ""),
                    name=str(function.get("name") or ""),
                    arguments=str(function.get("arguments") or ""),
                    tokens=1,
                )
            )
        return out

    def end(self, duration_s: float, ttft_s: float) -> list[TokenEvent | Finished]:
        """The events that close the stream: each tool call done, then Finished with the
        provider's reported usage (zeros where it reported none)."""
        done: list[TokenEvent | Finished] = [
            ToolCallDelta(index=i, done=True) for i in sorted(self._calls)
        ]
        u = self.usage or {}
        details = u.get("prompt_tokens_details") or {}
        usage = Usage(
            prompt_tokens=int(u.get("prompt_tokens") or 0),
            completion_tokens=int(u.get("completion_tokens") or 0),
            cached_prompt_tokens=int(details.get("cached_tokens") or 0),
            ttft_seconds=ttft_s,
            decode_tokens_per_second=0.0,
            duration_seconds=duration_s,
        )
        finish = self.finish_reason or "stop"
        if finish not in ("stop", "length", "tool_calls"):
            finish = "stop"
        return [*done, Finished(finish_reason=finish, usage=usage)]
