"""The Responses wire format, streamed: the server-sent events of one response.

Pure: no I/O, no clock (callers pass `created`), no framework. Each frame is
`event: <type>\\ndata: <json>\\n\\n`, every event numbered by `sequence_number`:

    response.created, response.in_progress            (start)
    per item: response.output_item.added
      reasoning: content_part.added, reasoning_text.delta*, reasoning_text.done, content_part.done
      message:   content_part.added, output_text.delta*, output_text.done, content_part.done
      function call: function_call_arguments.delta*, function_call_arguments.done
      custom tool call: custom_tool_call_input.delta, custom_tool_call_input.done
    response.output_item.done (the whole item)
    response.completed, or response.incomplete (max_output_tokens), or response.failed

An item closes when the next one opens, when its call is done, or at the end. The model writes a
custom tool's input as a JSON string argument (parse.py), so the input is known only once the
call is done: it goes out then, whole, in one delta.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from cluster.errors import ApiError
from cluster.gateway.openai.encode import dumps
from cluster.gateway.responses.encode import (
    Item,
    Output,
    failed_body,
    logprobs_json,
    response_body,
    response_object,
)
from node_agent.types import Delta, Finished, ReasoningDelta, TokenEvent

_EMPTY_PARTS: dict[str, dict[str, Any]] = {
    "reasoning": {"type": "reasoning_text", "text": ""},
    "message": {"type": "output_text", "text": "", "annotations": [], "logprobs": []},
}


class ResponsesStreamEncoder:
    """SSE frames of one streamed response."""

    def __init__(
        self,
        *,
        request_id: str,
        model: str,
        created: int,
        echo: Mapping[str, Any] | None = None,
        custom_tools: frozenset[str] = frozenset(),
    ) -> None:
        self._id, self._model, self._created = request_id, model, created
        self._echo = echo
        self.output = Output(request_id, custom_tools)
        self._sequence = 0
        self._started = self._ended = False
        self._open: list[Item] = []  # items announced and not yet closed
        self._announced = 0

    def start(self) -> bytes:
        """response.created and response.in_progress; event() and fail() start if needed."""
        if self._started:
            return b""
        self._started = True
        body = response_object(
            request_id=self._id,
            model=self._model,
            created=self._created,
            status="in_progress",
            output=[],
            usage=None,
            echo=self._echo,
        )
        return self._frame("response.created", response=body) + self._frame(
            "response.in_progress", response=body
        )

    def event(self, event: TokenEvent | Finished) -> bytes:
        """The frames for one of the node's events; b"" when it shows nothing."""
        if self._ended:
            return b""
        frames = self.start()
        if isinstance(event, Finished):
            return frames + self._finish(event)
        item = self.output.add(event)
        if item is None:
            return frames
        if item.index >= self._announced:
            frames += self._close_done() + self._announce(item)
        if item in self._open:
            frames += self._delta(item, event)
        return frames + self._close_done()

    def fail(self, error: ApiError, code: str | None = None) -> bytes:
        """End the stream with response.failed: the output so far and the error; `code` as
        clients read it (e.g. context_length_exceeded), else the error's own."""
        if self._ended:
            return b""
        frames = self.start()
        self._ended = True
        body = failed_body(
            request_id=self._id,
            model=self._model,
            created=self._created,
            output=self.output,
            code=code or error.code or "server_error",
            message=error.message,
            echo=self._echo,
        )
        return frames + self._frame("response.failed", response=body)

    def _finish(self, finished: Finished) -> bytes:
        self.output.add(finished)
        self._ended = True
        body = response_body(
            request_id=self._id,
            model=self._model,
            created=self._created,
            output=self.output,
            echo=self._echo,
        )
        kind = "response.incomplete" if body["status"] == "incomplete" else "response.completed"
        return self._close_done() + self._frame(kind, response=body)

    def _frame(self, kind: str, **fields: Any) -> bytes:
        payload = {"type": kind, "sequence_number": self._sequence, **fields}
        self._sequence += 1
        return b"event: " + kind.encode("ascii") + b"\ndata: " + dumps(payload) + b"\n\n"

    def _announce(self, item: Item) -> bytes:
        self._announced, self._open = item.index + 1, [*self._open, item]
        frames = self._frame(
            "response.output_item.added", output_index=item.index, item=item.opening()
        )
        if item.kind in _EMPTY_PARTS:
            part = _EMPTY_PARTS[item.kind]
            frames += self._frame("response.content_part.added", **_at(item), part=part)
        return frames

    def _delta(self, item: Item, event: TokenEvent) -> bytes:
        if isinstance(event, Delta):
            written = self.output.written  # with any whitespace held back before it
            logprobs = logprobs_json(written.logprobs)
            return self._frame(
                "response.output_text.delta", **_at(item), delta=written.text, logprobs=logprobs
            )
        if isinstance(event, ReasoningDelta):
            return self._frame("response.reasoning_text.delta", **_at(item), delta=event.text)
        if item.kind == "function_call" and event.arguments:
            kind = "response.function_call_arguments.delta"
            return self._frame(kind, **_at(item, content=False), delta=event.arguments)
        return b""

    def _close_done(self) -> bytes:
        frames = b""
        for item in [i for i in self._open if i.status]:
            self._open.remove(item)
            frames += self._close(item) + self._frame(
                "response.output_item.done", output_index=item.index, item=item.json()
            )
        return frames

    def _close(self, item: Item) -> bytes:
        at = _at(item, content=item.kind in _EMPTY_PARTS)
        if item.kind == "function_call":
            return self._frame("response.function_call_arguments.done", **at, arguments=item.text)
        if item.kind == "custom_tool_call":
            delta = self._frame("response.custom_tool_call_input.delta", **at, delta=item.input)
            return delta + self._frame(
                "response.custom_tool_call_input.done", **at, input=item.input
            )
        if item.kind == "reasoning":
            done = self._frame("response.reasoning_text.done", **at, text=item.text)
        else:
            logprobs = logprobs_json(item.logprobs)
            done = self._frame("response.output_text.done", **at, text=item.text, logprobs=logprobs)
        return done + self._frame("response.content_part.done", **at, part=item.part())


def _at(item: Item, content: bool = True) -> dict[str, Any]:
    """Where an event's item is: its id, its output_index, and (text) its content_index."""
    at: dict[str, Any] = {"item_id": item.id, "output_index": item.index}
    return {**at, "content_index": 0} if content else at
