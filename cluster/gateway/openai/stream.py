"""The OpenAI wire format, streamed: the server-sent events of one chat or text completion.

Pure: no I/O, no clock (callers pass `created`), no framework. An encoder turns each of a node's
events (Delta, ReasoningDelta, ToolCallDelta, Finished) of choice `index` into frames.

Streams follow OpenAI frame for frame: per choice a role chunk (riding on the first tool call
when the answer opens with one), content, reasoning and tool-call chunks, a final chunk with
`finish_reason` and an empty delta; once every choice has finished, (with
`stream_options.include_usage`) a chunk with `choices: []` and `usage`, then `data: [DONE]`. A
stream that fails after it has started ends with the usage so far (when asked for), one
`data: {"error": {...}}` event, and `[DONE]`.
"""

from __future__ import annotations

from json.encoder import encode_basestring_ascii
from typing import Any, ClassVar

from cluster.errors import ApiError
from cluster.gateway.openai.encode import (
    JSON,
    SSE_DONE,
    chat_logprobs,
    error_event,
    finish_reason,
    legacy_logprobs,
    usage_dict,
    usage_so_far,
)
from node_agent.types import Delta, Finished, ReasoningDelta, TokenEvent, ToolCallDelta


class _Sent:
    """What a stream has sent of one choice."""

    __slots__ = ("calls", "chars", "finished", "opened", "reasoning", "tokens")

    def __init__(self) -> None:
        self.opened = False  # its first chunk (the role, in a chat) has gone out
        self.calls: set[int] = set()  # the tool calls whose first chunk has gone out
        self.tokens = self.reasoning = self.chars = 0  # tokens, reasoning tokens, text length
        self.finished: Finished | None = None


class _StreamEncoder:
    """SSE frames of one stream of `choices` choices; the JSON around a plain text delta is
    formatted once, up front."""

    _object: ClassVar[str]
    _id_prefix: ClassVar[str]

    def __init__(
        self, *, request_id: str, model: str, created: int, include_usage: bool, choices: int = 1
    ) -> None:
        head = {
            "id": f"{self._id_prefix}-{request_id}",
            "object": self._object,
            "created": created,
            "model": model,
        }
        self._head = "data: " + JSON.encode(head)[:-1] + ',"choices":['
        # With include_usage OpenAI puts "usage": null on every chunk but the last.
        self._tail = '],"usage":null}\n\n' if include_usage else "]}\n\n"
        self._text = [self._text_frame(i) for i in range(choices)]
        self._sent = [_Sent() for _ in range(choices)]
        self._left = choices
        self.include_usage = include_usage

    @property
    def completion_tokens(self) -> int:
        """Tokens generated so far over every choice, for the usage of a failed stream."""
        return sum(s.tokens for s in self._sent)

    def event(self, event: TokenEvent | Finished, index: int = 0) -> bytes:
        """The frames for one event of choice `index`; b"" when it shows nothing."""
        if isinstance(event, Delta):
            return self.delta(event, index)
        if isinstance(event, Finished):
            return self.finish(event, index)
        if isinstance(event, ReasoningDelta):
            return self.reasoning(event, index)
        return self.tool_call(event, index)

    def delta(self, delta: Delta, index: int = 0) -> bytes:
        """The frame for a text delta; b"" when it carries neither text nor logprobs."""
        sent = self._sent[index]
        sent.tokens += delta.tokens
        if delta.logprobs:
            frame = self._frame(self._text_choice(index, delta, sent))
        elif not delta.text:
            return b""
        else:
            before, after = self._text[index]
            frame = before + encode_basestring_ascii(delta.text).encode("ascii") + after
        sent.chars += len(delta.text)
        return frame if sent.opened else self._open(index, sent) + frame

    def reasoning(self, delta: ReasoningDelta, index: int = 0) -> bytes:
        """Counts the tokens; a chat stream shows the text too."""
        sent = self._sent[index]
        sent.tokens += delta.tokens
        sent.reasoning += delta.tokens
        return b""

    def tool_call(self, call: ToolCallDelta, index: int = 0) -> bytes:
        """Counts the tokens; a chat stream shows the call too."""
        self._sent[index].tokens += call.tokens
        return b""

    def finish(self, finished: Finished, index: int = 0) -> bytes:
        """The choice's finish_reason chunk; after the last choice's, usage when asked for, and
        [DONE]."""
        sent = self._sent[index]
        if sent.finished is not None:
            return b""
        sent.finished = finished
        frames = self._frame(self._last_choice(index, finish_reason(finished.finish_reason)))
        if not sent.opened:
            frames = self._open(index, sent) + frames
        self._left -= 1
        if self._left:
            return frames
        if self.include_usage:
            ends = [s.finished.usage for s in self._sent if s.finished is not None]
            frames += self._usage_frame(usage_dict(ends))
        return frames + SSE_DONE

    def fail(self, error: ApiError, *, prompt_tokens: int = 0, cached_tokens: int = 0) -> bytes:
        """End a started stream with `error`: usage so far (when asked for), the error, [DONE]."""
        frames = b""
        if self.include_usage:
            reasoning = sum(s.reasoning for s in self._sent)
            usage = usage_so_far(prompt_tokens, self.completion_tokens, cached_tokens, reasoning)
            frames = self._usage_frame(usage)
        return frames + error_event(error) + SSE_DONE

    def _frame(self, choice: dict[str, Any]) -> bytes:
        return (self._head + JSON.encode(choice) + self._tail).encode("ascii")

    def _usage_frame(self, usage: dict[str, Any]) -> bytes:
        return (self._head + '],"usage":' + JSON.encode(usage) + "}\n\n").encode("ascii")

    def _text_frame(self, index: int) -> tuple[bytes, bytes]:
        """A plain text chunk of choice `index`: what goes before its text, and after."""
        raise NotImplementedError

    def _text_choice(self, index: int, delta: Delta, sent: _Sent) -> dict[str, Any]:
        raise NotImplementedError

    def _open(self, index: int, sent: _Sent) -> bytes:
        sent.opened = True
        return b""

    def _last_choice(self, index: int, reason: str) -> dict[str, Any]:
        raise NotImplementedError


class ChatStreamEncoder(_StreamEncoder):
    """`chat.completion.chunk` frames for one streamed chat completion."""

    _object = "chat.completion.chunk"
    _id_prefix = "chatcmpl"

    def reasoning(self, delta: ReasoningDelta, index: int = 0) -> bytes:
        """The frame for reasoning, under both names clients read (as the message has it)."""
        super().reasoning(delta, index)
        if not delta.text:
            return b""
        sent = self._sent[index]
        opened = b"" if sent.opened else self._open(index, sent)
        text = delta.text
        return opened + self._frame(_chunk(index, {"reasoning_content": text, "reasoning": text}))

    def tool_call(self, call: ToolCallDelta, index: int = 0) -> bytes:
        """A call's first chunk (index, id, type, name, empty arguments), then its arguments'
        fragments, as OpenAI streams them (the SDK appends whatever repeats, so the name goes
        once); the call's end shows nothing."""
        sent = self._sent[index]
        sent.tokens += call.tokens
        frames = b""
        if (call.id or call.name) and call.index not in sent.calls:
            sent.calls.add(call.index)
            function = {"name": call.name, "arguments": ""}
            head = {"index": call.index, "id": call.id, "type": "function", "function": function}
            delta: dict[str, Any] = {"tool_calls": [head]}
            if not sent.opened and len(self._sent) == 1:  # the role rides on it, content null
                sent.opened = True
                delta = {"role": "assistant", "content": None, **delta}
            elif not sent.opened:
                frames = self._open(index, sent)
            frames += self._frame(_chunk(index, delta))
        if call.arguments:
            if not sent.opened:
                frames += self._open(index, sent)
            fragment = {"index": call.index, "function": {"arguments": call.arguments}}
            frames += self._frame(_chunk(index, {"tool_calls": [fragment]}))
        return frames

    def _text_frame(self, index: int) -> tuple[bytes, bytes]:
        before = self._head + f'{{"index":{index},"delta":{{"content":'
        after = '},"logprobs":null,"finish_reason":null}' + self._tail
        return before.encode("ascii"), after.encode("ascii")

    def _text_choice(self, index: int, delta: Delta, sent: _Sent) -> dict[str, Any]:
        choice = _chunk(index, {"content": delta.text})
        choice["logprobs"] = chat_logprobs(delta.logprobs)
        return choice

    def _open(self, index: int, sent: _Sent) -> bytes:
        # With several choices, every one opens now, in order: the official SDK's accumulator
        # files a choice by when its first chunk came, not by its index.
        frames = b""
        for i, other in enumerate(self._sent):
            if not other.opened and (i == index or len(self._sent) > 1):
                other.opened = True
                frames += self._frame(_chunk(i, {"role": "assistant", "content": ""}))
        return frames

    def _last_choice(self, index: int, reason: str) -> dict[str, Any]:
        return {"index": index, "delta": {}, "logprobs": None, "finish_reason": reason}


def _chunk(index: int, delta: dict[str, Any]) -> dict[str, Any]:
    return {"index": index, "delta": delta, "logprobs": None, "finish_reason": None}


class CompletionStreamEncoder(_StreamEncoder):
    """`text_completion` frames for one streamed text completion."""

    _object = "text_completion"
    _id_prefix = "cmpl"

    def _text_frame(self, index: int) -> tuple[bytes, bytes]:
        after = f',"index":{index},"logprobs":null,"finish_reason":null}}' + self._tail
        return (self._head + '{"text":').encode("ascii"), after.encode("ascii")

    def _text_choice(self, index: int, delta: Delta, sent: _Sent) -> dict[str, Any]:
        return {
            "text": delta.text,
            "index": index,
            "logprobs": legacy_logprobs(delta.logprobs, sent.chars),
            "finish_reason": None,
        }

    def _last_choice(self, index: int, reason: str) -> dict[str, Any]:
        return {"text": "", "index": index, "logprobs": None, "finish_reason": reason}
