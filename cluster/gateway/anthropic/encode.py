"""The Anthropic wire format, responses: error bodies, stop reasons, usage, whole messages and
the model list.

Pure: no I/O, no clock (callers pass `created`), no framework. `Message` gathers a node's events
(Delta, ReasoningDelta, ToolCallDelta, Finished) into content blocks for `message_body`; streams
are framed by cluster/gateway/anthropic/stream.py from the same parts.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from cluster.errors import ApiError
from node_agent.types import Delta, Finished, ReasoningDelta, TokenEvent

# Anthropic's error types by HTTP status; it answers 529 for overloaded, meterless keeps 503.
_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    503: "overloaded_error",
    504: "timeout_error",
}


def error_type(status: int) -> str:
    """Anthropic's error type for an HTTP status."""
    return _ERROR_TYPES.get(status, "invalid_request_error" if status < 500 else "api_error")


def error_body(exc: ApiError) -> dict[str, Any]:
    """The Anthropic error object: `{"type": "error", "error": {"type", "message"}}`."""
    return {"type": "error", "error": {"type": error_type(exc.status), "message": exc.message}}


# "cancelled" ends only streams whose client has gone, so no one reads it; end_turn is the
# honest shape for output that ended early without hitting a limit.
_STOP_REASONS = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "cancelled": "end_turn",
}


def stop_reason(finished: Finished) -> tuple[str, str | None]:
    """Anthropic's `stop_reason` and `stop_sequence` for how a generation finished."""
    if finished.stop_sequence:  # the node matches only the request's own stop strings
        return "stop_sequence", finished.stop_sequence
    return _STOP_REASONS.get(finished.finish_reason, "end_turn"), None


def usage(prompt: int, cached: int, output: int) -> dict[str, Any]:
    """Anthropic's `usage`: input_tokens counts only the prompt tokens read from no cache."""
    return {
        "input_tokens": prompt - cached,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": cached,
        "output_tokens": output,
    }


def tool_input(arguments: str) -> dict[str, Any]:
    """A call's arguments as its `input` object; {} when they are not one (a node that keeps its
    contract never sends that: a call that does not parse reaches the client as text)."""
    try:
        value = json.loads(arguments or "{}")
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


class Message:
    """One non-streamed answer, gathered from its events into content blocks in order."""

    __slots__ = ("blocks", "calls", "finished")

    def __init__(self) -> None:
        self.blocks: list[dict[str, Any]] = []  # text and thinking with their text in pieces
        self.calls: dict[int, dict[str, Any]] = {}  # call index -> its tool_use block
        self.finished: Finished | None = None

    def add(self, event: TokenEvent) -> None:
        """Gather one event: text and reasoning extend the open block of their kind."""
        if isinstance(event, Delta | ReasoningDelta):
            if event.text:
                self._extend("text" if isinstance(event, Delta) else "thinking", event.text)
            return
        call = self.calls.get(event.index)
        if call is None:
            call = {"type": "tool_use", "id": "", "name": "", "input": []}
            self.calls[event.index] = call
            self.blocks.append(call)
        call["id"], call["name"] = event.id or call["id"], event.name or call["name"]
        if event.arguments:
            call["input"].append(event.arguments)

    def _extend(self, kind: str, text: str) -> None:
        if not self.blocks or self.blocks[-1]["type"] != kind:
            self.blocks.append({"type": kind, kind: []})
        self.blocks[-1][kind].append(text)

    def content(self) -> list[dict[str, Any]]:
        """The `content` array: thinking, text and tool_use blocks as they came."""
        return [_finished_block(b) for b in self.blocks]

    def end(self) -> Finished:
        """How the generation finished."""
        if self.finished is None:
            raise ValueError("the message has not finished")
        return self.finished


def _finished_block(block: dict[str, Any]) -> dict[str, Any]:
    kind = block["type"]
    if kind == "tool_use":
        return {**block, "input": tool_input("".join(block["input"]))}
    if kind == "thinking":  # no signature: meterless signs nothing, but the field is required
        return {"type": "thinking", "thinking": "".join(block["thinking"]), "signature": ""}
    return {"type": "text", "text": "".join(block["text"])}


def message_id(request_id: str) -> str:
    """The message's `id` for a request."""
    return f"msg_{request_id}"


def message_body(request_id: str, model: str, message: Message) -> dict[str, Any]:
    """A whole non-streamed message."""
    finished = message.end()
    reason, sequence = stop_reason(finished)
    u = finished.usage
    return {
        "id": message_id(request_id),
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": message.content(),
        "stop_reason": reason,
        "stop_sequence": sequence,
        "usage": usage(u.prompt_tokens, u.cached_prompt_tokens, u.completion_tokens),
    }


def count_tokens_body(prompt_tokens: int) -> dict[str, Any]:
    """The `/v1/messages/count_tokens` answer."""
    return {"input_tokens": prompt_tokens}


def _rfc3339(unix: int) -> str:
    return datetime.fromtimestamp(unix, UTC).isoformat().replace("+00:00", "Z")


def model_list(ids: Iterable[str], created: int) -> dict[str, Any]:
    """The `GET /v1/models` body in Anthropic's shape (Claude Code's model discovery reads only
    this one); every model is dated `created`."""
    data = [
        {"type": "model", "id": i, "display_name": i, "created_at": _rfc3339(created)} for i in ids
    ]
    return {
        "data": data,
        "has_more": False,
        "first_id": data[0]["id"] if data else None,
        "last_id": data[-1]["id"] if data else None,
    }
