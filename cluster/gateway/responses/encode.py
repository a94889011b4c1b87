"""The Responses wire format, responses: output items and the whole `response` object.

Pure: no I/O, no clock (callers pass `created`), no framework. `Output` gathers a node's events
(Delta, ReasoningDelta, ToolCallDelta, Finished) into output items in the order they began: a
reasoning item, a message, a function call or a custom tool call (a call to a function that
parse.py made of a custom tool, turned back). `response_body` is the object both a whole answer
and stream.py's last event carry; it repeats the request's settings (`echo`, from
ResponsesRequest.echo), which the official SDK's `Response` model requires.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

from node_agent.types import (
    Delta,
    Finished,
    ReasoningDelta,
    TokenEvent,
    TokenLogprob,
    ToolCallDelta,
    TopLogprob,
)

_PREFIXES = {
    "reasoning": "rs",
    "message": "msg",
    "function_call": "fc",
    "custom_tool_call": "ctc",
}
# What the response says when the request sent nothing of a required field.
DEFAULT_ECHO: dict[str, Any] = {
    "instructions": None,
    "tools": [],
    "tool_choice": "auto",
    "parallel_tool_calls": True,
    "temperature": None,
    "top_p": None,
    "text": {"format": {"type": "text"}},
    "metadata": {},
    "store": False,
}


def usage_json(prompt: int, output: int, cached: int, reasoning: int) -> dict[str, Any]:
    """The Responses `usage` from plain counts."""
    return {
        "input_tokens": prompt,
        "input_tokens_details": {"cached_tokens": cached, "cache_write_tokens": 0},
        "output_tokens": output,
        "output_tokens_details": {"reasoning_tokens": reasoning},
        "total_tokens": prompt + output,
    }


def _token(t: TokenLogprob | TopLogprob) -> dict[str, Any]:
    # A token that ends inside a character has no text of its own; the node sends its bytes.
    raw = t.bytes or t.token.encode("utf-8", "surrogatepass")
    return {"token": t.token, "logprob": t.logprob, "bytes": list(raw)}


def logprobs_json(tokens: Iterable[TokenLogprob]) -> list[dict[str, Any]]:
    """An output_text's `logprobs`: each token with its likeliest alternatives."""
    return [{**_token(t), "top_logprobs": [_token(a) for a in t.top]} for t in tokens]


class Item:
    """One output item as it grows: its kind, id, text (or arguments) and, once closed, status."""

    __slots__ = ("call_id", "id", "index", "kind", "logprobs", "name", "parts", "status")

    def __init__(self, kind: str, index: int, request_id: str) -> None:
        self.kind = kind  # reasoning, message, function_call or custom_tool_call
        self.index = index  # its output_index
        self.id = f"{_PREFIXES[kind]}_{request_id}_{index}"
        self.parts: list[str] = []  # text, reasoning or argument fragments
        self.logprobs: list[TokenLogprob] = []
        self.call_id = self.name = ""
        self.status = ""  # "" while open; then completed or incomplete

    @property
    def text(self) -> str:
        """Everything written so far: the text, the reasoning or the call's arguments."""
        return "".join(self.parts)

    @property
    def input(self) -> str:
        """A custom tool call's input: the `input` argument the model wrote, else its text."""
        try:
            arguments = json.loads(self.text)
        except ValueError:
            return self.text
        value = arguments.get("input") if isinstance(arguments, dict) else None
        return value if isinstance(value, str) else self.text

    def part(self) -> dict[str, Any]:
        """A message's or a reasoning item's one content part, as written so far."""
        if self.kind == "reasoning":
            return {"type": "reasoning_text", "text": self.text}
        logprobs = logprobs_json(self.logprobs)
        return {"type": "output_text", "text": self.text, "annotations": [], "logprobs": logprobs}

    def json(self, unfinished: str = "in_progress") -> dict[str, Any]:
        """The item as the response shows it; `unfinished`: the status while it is open."""
        out: dict[str, Any] = {"type": self.kind, "id": self.id}
        if self.kind == "reasoning":
            return {**out, "summary": [], "content": [self.part()]}
        status = self.status or unfinished
        if self.kind == "message":
            return {**out, "status": status, "role": "assistant", "content": [self.part()]}
        out.update(call_id=self.call_id, name=self.name)
        if self.kind == "custom_tool_call":
            return {**out, "input": self.input}
        return {**out, "arguments": self.text, "status": status}

    def opening(self) -> dict[str, Any]:
        """The item as `response.output_item.added` shows it: nothing written yet."""
        out = self.json()
        if "status" in out:
            out["status"] = "in_progress"
        if self.kind in ("reasoning", "message"):
            out["content"] = []
        elif self.kind == "custom_tool_call":
            out["input"] = ""
        else:
            out["arguments"] = ""
        return out


class Output:
    """A response's output items, gathered from one generation's events."""

    __slots__ = (
        "_calls",
        "_custom",
        "_request_id",
        "_space",
        "cached_tokens",
        "finished",
        "items",
        "output_tokens",
        "prompt_tokens",
        "reasoning_tokens",
        "written",
    )

    def __init__(self, request_id: str, custom_tools: frozenset[str] = frozenset()) -> None:
        self._request_id = request_id
        self._custom = custom_tools
        self.items: list[Item] = []
        self._calls: dict[int, Item] = {}  # the node's call index -> its item
        self._space: list[Delta] = []  # whitespace that opens no message unless text follows
        self.written = Delta("", 0)  # the last text a message got, with the whitespace before
        self.prompt_tokens = self.cached_tokens = self.output_tokens = self.reasoning_tokens = 0
        self.finished: Finished | None = None

    def add(self, event: TokenEvent | Finished) -> Item | None:
        """Gather one event; the item it went to, None when it showed nothing."""
        if isinstance(event, Finished):
            self._finish(event)
            return None
        self._count(event)
        if isinstance(event, Delta):
            return self._text(event)
        if isinstance(event, ReasoningDelta):
            if not event.text:
                return None
            item = self._current("reasoning")
            item.parts.append(event.text)
            return item
        item = self._calls.get(event.index) or self._call(event)
        item.name = item.name or event.name
        if event.arguments:
            item.parts.append(event.arguments)
        if event.done:
            item.status = "completed"
        return item

    def usage(self) -> dict[str, Any]:
        """The usage: the node's own once finished, else counted from the events so far."""
        if self.finished is not None:
            u = self.finished.usage
            prompt, output = u.prompt_tokens, u.completion_tokens
            return usage_json(prompt, output, u.cached_prompt_tokens, u.reasoning_tokens)
        prompt, output = self.prompt_tokens, self.output_tokens
        return usage_json(prompt, output, self.cached_tokens, self.reasoning_tokens)

    def _count(self, event: TokenEvent) -> None:
        if event.prompt_tokens and not self.prompt_tokens:  # the first event carries them
            self.prompt_tokens, self.cached_tokens = event.prompt_tokens, event.cached_prompt_tokens
        self.output_tokens += event.tokens
        if isinstance(event, ReasoningDelta):
            self.reasoning_tokens += event.tokens

    def _text(self, delta: Delta) -> Item | None:
        # Whitespace waits for more text in the same message: the newlines a model writes
        # after its reasoning or around a tool call open no message and end none.
        if not delta.text.strip():
            self._space.append(delta)
            return None
        item = self._current("message")  # a new message drops the whitespace before it
        if self._space:
            held = (*self._space, delta)
            self._space.clear()
            text, logprobs = "".join(d.text for d in held), [t for d in held for t in d.logprobs]
            delta = Delta(text, delta.tokens, logprobs=tuple(logprobs))
        item.parts.append(delta.text)
        item.logprobs.extend(delta.logprobs)
        self.written = delta
        return item

    def _current(self, kind: str) -> Item:
        last = self.items[-1] if self.items else None
        if last is not None and last.kind == kind and not last.status:
            return last
        return self._open(kind)

    def _call(self, call: ToolCallDelta) -> Item:
        item = self._open("custom_tool_call" if call.name in self._custom else "function_call")
        # Fixed when the call opens: clients match an item's added and done events by call_id.
        item.call_id = call.id or f"call_{self._request_id}_{item.index}"
        self._calls[call.index] = item
        return item

    def _open(self, kind: str) -> Item:
        for item in self.items:  # a new item closes those before it
            item.status = item.status or "completed"
        self._space.clear()
        self.items.append(Item(kind, len(self.items), self._request_id))
        return self.items[-1]

    def _finish(self, finished: Finished) -> None:
        self.finished = finished
        ending = "incomplete" if finished.finish_reason == "length" else "completed"
        for item in self.items:
            item.status = item.status or ending


def response_object(
    *,
    request_id: str,
    model: str,
    created: int,
    status: str,
    output: list[dict[str, Any]],
    usage: dict[str, Any] | None,
    echo: Mapping[str, Any] | None = None,
    error: dict[str, Any] | None = None,
    incomplete: str | None = None,
) -> dict[str, Any]:
    """A `response` object in any state: in_progress, completed, incomplete (with the reason)
    or failed (with the error)."""
    return {
        "id": f"resp_{request_id}",
        "object": "response",
        "created_at": created,
        "status": status,
        "model": model,
        "output": output,
        "error": error,
        "incomplete_details": {"reason": incomplete} if incomplete else None,
        "usage": usage,
        **DEFAULT_ECHO,
        **(echo or {}),
    }


def response_body(
    *,
    request_id: str,
    model: str,
    created: int,
    output: Output,
    echo: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """A finished response: completed, or incomplete when it ran out of output tokens."""
    if output.finished is None:
        raise ValueError("the generation has not finished")
    cut = output.finished.finish_reason == "length"
    return response_object(
        request_id=request_id,
        model=model,
        created=created,
        status="incomplete" if cut else "completed",
        output=[item.json() for item in output.items],
        usage=output.usage(),
        echo=echo,
        incomplete="max_output_tokens" if cut else None,
    )


def failed_body(
    *,
    request_id: str,
    model: str,
    created: int,
    output: Output,
    code: str,
    message: str,
    echo: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """A failed response: the output and usage so far, and the error; `code` is what clients
    act on (`context_length_exceeded`: the prompt does not fit the model)."""
    return response_object(
        request_id=request_id,
        model=model,
        created=created,
        status="failed",
        output=[item.json("incomplete") for item in output.items],
        usage=output.usage(),
        echo=echo,
        error={"code": code, "message": message},
    )
