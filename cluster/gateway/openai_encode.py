"""The OpenAI wire format, responses: bodies, model cards and server-sent event streams.

Pure: no I/O, no clock (callers pass `created`), no framework. The gateway re-shapes a node's
Delta / Finished events with the builders here (`chat_completion`, `ChatStreamEncoder`, ...).

Streams follow OpenAI frame for frame: a role chunk, content chunks, a final chunk with
`finish_reason` and an empty delta, then (with `stream_options.include_usage`) a chunk with
`choices: []` and `usage`, then `data: [DONE]`. A stream that fails after it has started ends
with the usage so far (when asked for), one `data: {"error": {...}}` event, and `[DONE]`.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from json.encoder import encode_basestring_ascii
from typing import Any, ClassVar

from cluster.errors import ApiError
from node_agent.types import Delta, Finished, Usage

_JSON = json.JSONEncoder(separators=(",", ":"), check_circular=False)
SSE_DONE = b"data: [DONE]\n\n"
OWNED_BY = "meterless"


def dumps(obj: Any) -> bytes:
    """Compact ASCII JSON, the one encoding every response body and SSE frame uses."""
    return _JSON.encode(obj).encode("ascii")


# OpenAI has no "cancelled": the gateway cancels only streams whose client has gone, so no one
# reads it; "stop" is the honest shape for output that ended early without hitting a limit.
_FINISH_REASONS = {"stop": "stop", "length": "length", "cancelled": "stop"}


def finish_reason(reason: str) -> str:
    """The agent's finish reason as OpenAI spells it."""
    return _FINISH_REASONS.get(reason, "stop")


def usage_dict(usage: Usage) -> dict[str, Any]:
    """OpenAI's `usage` object for one finished generation."""
    return _usage(usage.prompt_tokens, usage.completion_tokens, usage.cached_prompt_tokens)


def _usage(prompt: int, completion: int, cached: int) -> dict[str, Any]:
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": cached},
    }


def chat_completion(
    *, request_id: str, model: str, created: int, text: str, finished: Finished
) -> dict[str, Any]:
    """A whole `chat.completion` response."""
    message = {"role": "assistant", "content": text, "refusal": None}
    choice = {
        "index": 0,
        "message": message,
        "logprobs": None,
        "finish_reason": finish_reason(finished.finish_reason),
    }
    return {
        "id": f"chatcmpl-{request_id}",
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": [choice],
        "usage": usage_dict(finished.usage),
    }


def text_completion(
    *, request_id: str, model: str, created: int, text: str, finished: Finished
) -> dict[str, Any]:
    """A whole `text_completion` response."""
    choice = {
        "text": text,
        "index": 0,
        "logprobs": None,
        "finish_reason": finish_reason(finished.finish_reason),
    }
    return {
        "id": f"cmpl-{request_id}",
        "object": "text_completion",
        "created": created,
        "model": model,
        "choices": [choice],
        "usage": usage_dict(finished.usage),
    }


def model_card(name: str, *, created: int) -> dict[str, Any]:
    """One entry of `GET /v1/models`, also the body of `GET /v1/models/{name}`."""
    return {"id": name, "object": "model", "created": created, "owned_by": OWNED_BY}


def model_list(names: Iterable[str], *, created: int) -> dict[str, Any]:
    """The `GET /v1/models` body."""
    return {"object": "list", "data": [model_card(n, created=created) for n in names]}


def sse_event(payload: dict[str, Any]) -> bytes:
    """One server-sent event carrying `payload` as JSON."""
    return b"data: " + dumps(payload) + b"\n\n"


def error_event(error: ApiError) -> bytes:
    """The in-stream error event OpenAI sends when a started stream fails."""
    return sse_event(error.body())


class _StreamEncoder:
    """SSE frames of one stream; the JSON around each delta is formatted once, up front."""

    _object: ClassVar[str]
    _id_prefix: ClassVar[str]
    _delta_open: ClassVar[str]  # a content chunk's choice, up to its text
    _delta_close: ClassVar[str]  # and after it

    def __init__(self, *, request_id: str, model: str, created: int, include_usage: bool) -> None:
        head = {
            "id": f"{self._id_prefix}-{request_id}",
            "object": self._object,
            "created": created,
            "model": model,
        }
        self._head = "data: " + _JSON.encode(head)[:-1] + ',"choices":['
        # With include_usage OpenAI puts "usage": null on every chunk but the last.
        self._tail = '],"usage":null}\n\n' if include_usage else "]}\n\n"
        self._before = (self._head + self._delta_open).encode("ascii")
        self._after = (self._delta_close + self._tail).encode("ascii")
        self.include_usage = include_usage
        self.completion_tokens = 0  # counted from the deltas, for the usage of a failed stream

    def delta(self, delta: Delta) -> bytes:
        """The frame for one delta; b"" when it carries no text."""
        self.completion_tokens += delta.tokens
        if not delta.text:
            return b""
        return self._before + encode_basestring_ascii(delta.text).encode("ascii") + self._after

    def finish(self, finished: Finished) -> bytes:
        """The closing frames: the finish_reason chunk, usage when asked for, and [DONE]."""
        last = self._frame(self._last_choice(finish_reason(finished.finish_reason)))
        if self.include_usage:
            last += self._usage_frame(usage_dict(finished.usage))
        return last + SSE_DONE

    def fail(self, error: ApiError, *, prompt_tokens: int = 0) -> bytes:
        """End a started stream with `error`: usage so far (when asked for), the error, [DONE]."""
        frames = b""
        if self.include_usage:
            frames = self._usage_frame(_usage(prompt_tokens, self.completion_tokens, 0))
        return frames + error_event(error) + SSE_DONE

    def _frame(self, choice: dict[str, Any]) -> bytes:
        return (self._head + _JSON.encode(choice) + self._tail).encode("ascii")

    def _usage_frame(self, usage: dict[str, Any]) -> bytes:
        return (self._head + '],"usage":' + _JSON.encode(usage) + "}\n\n").encode("ascii")

    def _last_choice(self, reason: str) -> dict[str, Any]:
        raise NotImplementedError


class ChatStreamEncoder(_StreamEncoder):
    """`chat.completion.chunk` frames for one streamed chat completion."""

    _object = "chat.completion.chunk"
    _id_prefix = "chatcmpl"
    _delta_open = '{"index":0,"delta":{"content":'
    _delta_close = '},"logprobs":null,"finish_reason":null}'
    _role_sent = False

    def delta(self, delta: Delta) -> bytes:
        """The frame for one delta, after the role chunk the first time; b"" for no text."""
        frame = super().delta(delta)
        return self._role() + frame if frame and not self._role_sent else frame

    def finish(self, finished: Finished) -> bytes:
        """The closing frames, after the role chunk if no text was ever sent."""
        frames = super().finish(finished)
        return frames if self._role_sent else self._role() + frames

    def _role(self) -> bytes:
        self._role_sent = True
        return self._frame(
            {
                "index": 0,
                "delta": {"role": "assistant", "content": ""},
                "logprobs": None,
                "finish_reason": None,
            }
        )

    def _last_choice(self, reason: str) -> dict[str, Any]:
        return {"index": 0, "delta": {}, "logprobs": None, "finish_reason": reason}


class CompletionStreamEncoder(_StreamEncoder):
    """`text_completion` frames for one streamed text completion."""

    _object = "text_completion"
    _id_prefix = "cmpl"
    _delta_open = '{"text":'
    _delta_close = ',"index":0,"logprobs":null,"finish_reason":null}'

    def _last_choice(self, reason: str) -> dict[str, Any]:
        return {"text": "", "index": 0, "logprobs": None, "finish_reason": reason}
