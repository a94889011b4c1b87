"""The Anthropic wire format, streamed: the server-sent events of one `/v1/messages` answer.

Pure: no I/O, no clock, no framework. `MessagesStreamEncoder` turns each of a node's events
(Delta, ReasoningDelta, ToolCallDelta, Finished) into frames, as Anthropic streams them:
`message_start`; per content block `content_block_start`, its deltas (`thinking_delta`,
`text_delta`, `input_json_delta`) and `content_block_stop`; then `message_delta` with the stop
reason and the cumulative usage, and `message_stop`. A block closes when a block of another kind
(or another tool call) opens, when its call is done, or at the end. `ping` may go out at any time.

`message_start` may go out before the node has said anything (pings keep the client waiting
through a long prefill), so its input counts may be 0; the real ones, learnt from the first
event, ride on `message_delta`, whose usage the SDKs take over whole. A stream that fails once
started ends with one `error` event, as Anthropic's do: the client raises, and no usage follows.
"""

from __future__ import annotations

from json.encoder import encode_basestring_ascii
from typing import Any

from cluster.errors import ApiError
from cluster.gateway.anthropic.encode import error_body, message_id, stop_reason, usage
from cluster.gateway.openai.encode import dumps
from node_agent.types import Delta, Finished, TokenEvent, ToolCallDelta


def sse(kind: str, payload: dict[str, Any]) -> bytes:
    """One server-sent event of type `kind` carrying `payload` as JSON."""
    return b"event: " + kind.encode("ascii") + b"\ndata: " + dumps(payload) + b"\n\n"


def error_event(error: ApiError) -> bytes:
    """The in-stream `error` event Anthropic sends when a started stream fails."""
    return sse("error", error_body(error))


_DELTA_FIELD = {"text": ("text_delta", "text"), "thinking": ("thinking_delta", "thinking")}


class MessagesStreamEncoder:
    """SSE frames of one streamed message."""

    def __init__(self, *, request_id: str, model: str) -> None:
        self._id = message_id(request_id)
        self._model = model
        self._started = self._finished = False
        self._prompt = self._cached = self._output = 0
        self._blocks = 0  # content blocks opened so far; the next one's index
        self._open: str | int | None = None  # "text", "thinking", a call's index, or none
        self._calls: dict[int, int] = {}  # call index -> its block's index
        self._text_head = b""  # what goes before a text or thinking delta's JSON string

    def start(self, prompt_tokens: int = 0, cached_tokens: int = 0) -> bytes:
        """`message_start`, with the prompt's counts as far as they are known (0 if not yet)."""
        self._started = True
        self._learn(prompt_tokens, cached_tokens)
        message: dict[str, Any] = {
            "id": self._id,
            "type": "message",
            "role": "assistant",
            "model": self._model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": usage(self._prompt, self._cached, 0),
        }
        return sse("message_start", {"type": "message_start", "message": message})

    def ping(self) -> bytes:
        """A keep-alive event."""
        return sse("ping", {"type": "ping"})

    def event(self, event: TokenEvent | Finished) -> bytes:
        """The frames for one event (message_start first if not yet sent); b"" when none."""
        if self._finished:
            return b""
        if isinstance(event, Finished):
            frames = self._start_once() + self._close()
            return frames + self._finish(event)
        self._learn(event.prompt_tokens, event.cached_prompt_tokens)
        self._output += event.tokens
        frames = self._start_once()
        if isinstance(event, ToolCallDelta):
            return frames + self._tool_call(event)
        if not event.text:
            return frames
        kind = "text" if isinstance(event, Delta) else "thinking"
        if self._open != kind:
            frames += self._close() + self._open_text(kind)
        return frames + self._text_head + encode_basestring_ascii(event.text).encode() + b"}}\n\n"

    def fail(self, error: ApiError) -> bytes:
        """End a started stream with `error` (nothing more may follow)."""
        self._finished = True
        return error_event(error)

    def _learn(self, prompt_tokens: int, cached_tokens: int) -> None:
        if prompt_tokens:  # only the first event carries them
            self._prompt, self._cached = prompt_tokens, cached_tokens

    def _start_once(self) -> bytes:
        return b"" if self._started else self.start(self._prompt, self._cached)

    def _open_block(self, block: dict[str, Any], opened: str | int) -> bytes:
        index, self._blocks, self._open = self._blocks, self._blocks + 1, opened
        start = {"type": "content_block_start", "index": index, "content_block": block}
        return sse("content_block_start", start)

    def _open_text(self, kind: str) -> bytes:
        # No signature to give: meterless signs nothing, yet the SDKs' thinking block needs one.
        block: dict[str, Any] = {"type": "text", "text": ""}
        if kind == "thinking":
            block = {"type": "thinking", "thinking": "", "signature": ""}
        frames = self._open_block(block, kind)
        delta_type, field = _DELTA_FIELD[kind]
        head = {"type": "content_block_delta", "index": self._blocks - 1}
        self._text_head = (
            b"event: content_block_delta\ndata: "
            + dumps(head)[:-1]
            + f',"delta":{{"type":"{delta_type}","{field}":'.encode("ascii")
        )
        return frames

    def _tool_call(self, call: ToolCallDelta) -> bytes:
        frames = b""
        if call.index not in self._calls:
            frames += self._close()
            self._calls[call.index] = self._blocks
            block = {"type": "tool_use", "id": call.id, "name": call.name, "input": {}}
            frames += self._open_block(block, call.index)
        index = self._calls[call.index]
        if call.arguments:
            delta = {"type": "input_json_delta", "partial_json": call.arguments}
            payload = {"type": "content_block_delta", "index": index, "delta": delta}
            frames += sse("content_block_delta", payload)
        if call.done and self._open == call.index:
            frames += self._close()  # clients may run a tool as soon as its block stops
        return frames

    def _close(self) -> bytes:
        if self._open is None:
            return b""
        self._open = None
        stop = {"type": "content_block_stop", "index": self._blocks - 1}
        return sse("content_block_stop", stop)

    def _finish(self, finished: Finished) -> bytes:
        self._finished = True
        reason, sequence = stop_reason(finished)
        u = finished.usage
        delta = {
            "type": "message_delta",
            "delta": {"stop_reason": reason, "stop_sequence": sequence},
            "usage": usage(u.prompt_tokens, u.cached_prompt_tokens, u.completion_tokens),
        }
        return sse("message_delta", delta) + sse("message_stop", {"type": "message_stop"})
