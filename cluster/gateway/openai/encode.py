"""The OpenAI wire format, responses: whole bodies, their parts, and model cards.

Pure: no I/O, no clock (callers pass `created`), no framework. The gateway re-shapes a node's
events (Delta, ReasoningDelta, ToolCallDelta, Finished) with the builders here: `Choice` gathers
one choice of a whole answer for `chat_completion` or `text_completion`. Streams are framed by
cluster/gateway/openai/stream.py from the same parts (usage, logprobs, finish reasons).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import Any

from cluster.errors import ApiError
from node_agent.types import (
    Delta,
    Finished,
    ReasoningDelta,
    TokenEvent,
    TokenLogprob,
    TopLogprob,
    Usage,
)

JSON = json.JSONEncoder(separators=(",", ":"), check_circular=False)
SSE_DONE = b"data: [DONE]\n\n"
OWNED_BY = "meterless"


def dumps(obj: Any) -> bytes:
    """Compact ASCII JSON, the one encoding every response body and SSE frame uses."""
    return JSON.encode(obj).encode("ascii")


# OpenAI has no "cancelled": the gateway cancels only streams whose client has gone, so no one
# reads it; "stop" is the honest shape for output that ended early without hitting a limit.
_FINISH_REASONS = {
    "stop": "stop",
    "length": "length",
    "tool_calls": "tool_calls",
    "cancelled": "stop",
}


def finish_reason(reason: str) -> str:
    """The agent's finish reason as OpenAI spells it."""
    return _FINISH_REASONS.get(reason, "stop")


def usage_dict(usages: Sequence[Usage]) -> dict[str, Any]:
    """OpenAI's `usage` for the generations of one answer, one per choice: the prompt counted
    once, as OpenAI counts it (the first choice's counts), the generated tokens summed."""
    first = usages[0]
    completion = sum(u.completion_tokens for u in usages)
    reasoning = sum(u.reasoning_tokens for u in usages)
    return usage_so_far(first.prompt_tokens, completion, first.cached_prompt_tokens, reasoning)


def usage_so_far(prompt: int, completion: int, cached: int, reasoning: int) -> dict[str, Any]:
    """OpenAI's `usage` from plain counts (a stream cut short has no Usage of its own)."""
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": cached},
        "completion_tokens_details": {"reasoning_tokens": reasoning},
    }


def _bytes(token: TokenLogprob | TopLogprob) -> list[int]:
    # A token that ends inside a character has no text of its own; the node sends its bytes.
    return list(token.bytes or token.token.encode("utf-8", "surrogatepass"))


def chat_logprobs(tokens: Iterable[TokenLogprob]) -> dict[str, Any]:
    """A chat choice's `logprobs`: each token with its likeliest alternatives."""
    content = [
        {
            "token": t.token,
            "logprob": t.logprob,
            "bytes": _bytes(t),
            "top_logprobs": [
                {"token": a.token, "logprob": a.logprob, "bytes": _bytes(a)} for a in t.top
            ],
        }
        for t in tokens
    ]
    return {"content": content, "refusal": None}


def legacy_logprobs(tokens: Sequence[TokenLogprob], offset: int = 0) -> dict[str, Any]:
    """A text completion's `logprobs` (the legacy shape); `offset`: characters before these."""
    offsets = []
    for t in tokens:
        offsets.append(offset)
        offset += len(t.token)
    return {
        "tokens": [t.token for t in tokens],
        "token_logprobs": [t.logprob for t in tokens],
        "top_logprobs": [{a.token: a.logprob for a in t.top} for t in tokens],
        "text_offset": offsets,
    }


class Choice:
    """One choice of a non-streamed answer, gathered from its events."""

    __slots__ = ("calls", "finished", "logprobs", "reasoning", "text")

    def __init__(self) -> None:
        self.text: list[str] = []
        self.reasoning: list[str] = []
        self.calls: dict[int, list[str]] = {}  # call index -> [id, name, *argument fragments]
        self.logprobs: list[TokenLogprob] = []
        self.finished: Finished | None = None

    def add(self, event: TokenEvent) -> None:
        """Gather one event of the choice's generation."""
        if isinstance(event, Delta):
            self.text.append(event.text)
            self.logprobs.extend(event.logprobs)
        elif isinstance(event, ReasoningDelta):
            self.reasoning.append(event.text)
        else:
            call = self.calls.setdefault(event.index, ["", ""])
            call[0], call[1] = event.id or call[0], event.name or call[1]
            if event.arguments:
                call.append(event.arguments)

    def message(self) -> dict[str, Any]:
        """The assistant message: content (null when only calls), tool calls, reasoning."""
        text = "".join(self.text)
        message: dict[str, Any] = {
            "role": "assistant",
            "content": None if self.calls and not text else text,
            "refusal": None,
        }
        if self.calls:
            message["tool_calls"] = [
                {
                    "id": call[0],
                    "type": "function",
                    "function": {"name": call[1], "arguments": "".join(call[2:])},
                }
                for _, call in sorted(self.calls.items())
            ]
        if self.reasoning:  # both names: vLLM's reasoning_content, and the newer reasoning
            message["reasoning_content"] = message["reasoning"] = "".join(self.reasoning)
        return message

    def end(self) -> Finished:
        """How the choice's generation finished."""
        if self.finished is None:
            raise ValueError("the choice has not finished")
        return self.finished


def _body(
    kind: str, request_id: str, model: str, created: int, choices: list[dict[str, Any]]
) -> dict[str, Any]:
    return {
        "id": f"{'chatcmpl' if kind == 'chat.completion' else 'cmpl'}-{request_id}",
        "object": kind,
        "created": created,
        "model": model,
        "choices": choices,
    }


def chat_completion(
    *, request_id: str, model: str, created: int, choices: Sequence[Choice], logprobs: bool = False
) -> dict[str, Any]:
    """A whole `chat.completion` response; `logprobs`: whether the request asked for them."""
    out = [
        {
            "index": i,
            "message": c.message(),
            "logprobs": chat_logprobs(c.logprobs) if logprobs else None,
            "finish_reason": finish_reason(c.end().finish_reason),
        }
        for i, c in enumerate(choices)
    ]
    body = _body("chat.completion", request_id, model, created, out)
    body["usage"] = usage_dict([c.end().usage for c in choices])
    return body


def text_completion(
    *, request_id: str, model: str, created: int, choices: Sequence[Choice], logprobs: bool = False
) -> dict[str, Any]:
    """A whole `text_completion` response; `logprobs`: whether the request asked for them."""
    out = [
        {
            "text": "".join(c.text),
            "index": i,
            "logprobs": legacy_logprobs(c.logprobs) if logprobs else None,
            "finish_reason": finish_reason(c.end().finish_reason),
        }
        for i, c in enumerate(choices)
    ]
    body = _body("text_completion", request_id, model, created, out)
    body["usage"] = usage_dict([c.end().usage for c in choices])
    return body


def model_card(
    name: str,
    *,
    created: int,
    capabilities: Iterable[str] = (),
    engines: Iterable[str] = (),
    context_length: int = 0,
    usd_per_mtok: float | None = None,
) -> dict[str, Any]:
    """One entry of `GET /v1/models`, also the body of `GET /v1/models/{name}`: OpenAI's four
    fields, then what the nodes serving it advertise (context_length only where known) and
    what its tokens cost to own, as the ledger measured it (only once it served some)."""
    card: dict[str, Any] = {
        "id": name,
        "object": "model",
        "created": created,
        "owned_by": OWNED_BY,
        "capabilities": sorted(capabilities),
        "engines": sorted(engines),
    }
    if context_length > 0:
        card["context_length"] = context_length
    if usd_per_mtok is not None:
        card["usd_per_mtok"] = round(usd_per_mtok, 6)
    return card


def model_list(cards: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """The `GET /v1/models` body."""
    return {"object": "list", "data": list(cards)}


def sse_event(payload: dict[str, Any]) -> bytes:
    """One server-sent event carrying `payload` as JSON."""
    return b"data: " + dumps(payload) + b"\n\n"


def error_event(error: ApiError) -> bytes:
    """The in-stream error event OpenAI sends when a started stream fails."""
    return sse_event(error.body())
