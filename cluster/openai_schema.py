"""The OpenAI wire format: request models, their conversion for the agent, and response shapes.

Pure: no I/O, no clock (callers pass `created`), no framework. The gateway parses a body with
`parse_request`, hands `to_generate_request(...)` to a node, and re-shapes the node's Delta /
Finished events with the builders here (`chat_completion`, `ChatStreamEncoder`, ...).

Streams follow OpenAI frame for frame: a role chunk, content chunks, a final chunk with
`finish_reason` and an empty delta, then (with `stream_options.include_usage`) a chunk with
`choices: []` and `usage`, then `data: [DONE]`. A stream that fails after it has started ends
with the usage so far (when asked for), one `data: {"error": {...}}` event, and `[DONE]`.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from json.encoder import encode_basestring_ascii
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Literal, TypeVar

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
)
from pydantic_core import PydanticCustomError

from cluster.errors import ApiError, InvalidRequest
from node_agent.types import ChatMessage, Delta, Finished, GenerateRequest, Sampling, Usage

if TYPE_CHECKING:
    from fastapi.exceptions import RequestValidationError

_JSON = json.JSONEncoder(separators=(",", ":"), check_circular=False)
SSE_DONE = b"data: [DONE]\n\n"
OWNED_BY = "meterless"


def dumps(obj: Any) -> bytes:
    """Compact ASCII JSON, the one encoding every response body and SSE frame uses."""
    return _JSON.encode(obj).encode("ascii")


# --- requests -----------------------------------------------------------------------------------


def _error(kind: str, message: str) -> PydanticCustomError:
    # Passed as context, so braces in user input never reach the template.
    return PydanticCustomError(kind, "{message}", {"message": message})


def _unsupported(message: str) -> PydanticCustomError:
    return _error("unsupported_value", message)


def _only_falsy(message: str) -> AfterValidator:
    """Accept a field only when absent, null, false, zero or empty: then ignoring it is harmless."""

    def check(value: Any) -> Any:
        if value:
            raise _unsupported(message)
        return value

    return AfterValidator(check)


def _only_one(field: str) -> AfterValidator:
    """Accept 1 or null: one choice per request is all the agent generates."""

    def check(value: int | None) -> int | None:
        if value is not None and value != 1:
            raise _unsupported(f"only {field}=1 is supported")
        return value

    return AfterValidator(check)


def _only_text(what: str) -> AfterValidator:
    """Accept the type tag "text" and nothing else."""

    def check(value: str) -> str:
        if value != "text":
            raise _unsupported(f"{what} {value!r} is not supported, only 'text'")
        return value

    return AfterValidator(check)


def _as_stop_list(value: Any) -> Any:
    if isinstance(value, str):
        return [value]
    if value is None or isinstance(value, list):
        return value
    raise _error("list_type", "Input should be a string or a list of strings")


def _as_single_prompt(value: Any) -> Any:
    # The official client types allow batches and token ids; the agent takes one text.
    if isinstance(value, list):
        if len(value) == 1 and isinstance(value[0], str):
            return value[0]
        raise _unsupported("several prompts and token-id prompts are not supported; send one")
    return value


def _as_content_parts(value: Any) -> Any:
    if isinstance(value, str):
        return [{"type": "text", "text": value}]
    if value is None or isinstance(value, list):
        return value
    raise _error("list_type", "Input should be a string or a list of content parts")


class _Lenient(BaseModel):
    """Strict types (a string is not a number) but unknown vendor fields pass through."""

    model_config = ConfigDict(extra="allow", strict=True, frozen=True)


class ContentPart(_Lenient):
    """One part of a message's content; only text parts are supported."""

    type: Annotated[str, _only_text("content part type")]
    text: str


class Message(_Lenient):
    """One chat message; `content` is a string or text parts (joined by newlines)."""

    role: Literal["system", "user", "assistant", "developer", "tool"]
    content: Annotated[list[ContentPart] | None, BeforeValidator(_as_content_parts)] = Field(
        default=None, validate_default=True)

    @field_validator("content")
    @classmethod
    def _content_required(cls, content: Any, info: ValidationInfo) -> Any:
        # Only an assistant turn may omit content (it carried tool calls instead).
        role = info.data.get("role")
        if content is None and role != "assistant":
            raise _error("missing", f"content is required for role {role!r}")
        return content

    @property
    def text(self) -> str:
        """The content as one string, text parts joined by newlines as vLLM does."""
        return "\n".join(part.text for part in self.content or ())


class StreamOptions(_Lenient):
    """`stream_options`; only `include_usage` changes anything."""

    include_usage: bool | None = None


class ResponseFormat(_Lenient):
    """`response_format`; only plain text is supported."""

    type: Annotated[str, _only_text("response_format type")]


class _CommonRequest(_Lenient):
    """Fields shared by chat and text completions."""

    model: str = Field(min_length=1)
    max_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, gt=0, le=1)
    n: Annotated[int | None, _only_one("n")] = None
    stop: Annotated[list[str] | None, BeforeValidator(_as_stop_list), Field(max_length=4)] = None
    seed: int | None = None
    stream: bool | None = False
    stream_options: StreamOptions | None = None
    user: str | None = None
    # Accepted and ignored: they shade sampling but never change the response's shape.
    presence_penalty: float | None = Field(default=None, ge=-2, le=2)
    frequency_penalty: float | None = Field(default=None, ge=-2, le=2)
    logit_bias: Annotated[dict[str, int] | None, _only_falsy("logit_bias is not supported")] = None

    @property
    def include_usage(self) -> bool:
        """Whether a streamed response ends with a usage chunk."""
        return bool(self.stream_options and self.stream_options.include_usage)

    @property
    def output_limit(self) -> int | None:
        """The requested cap on generated tokens, None for the agent's default."""
        return self.max_tokens


class ChatCompletionRequest(_CommonRequest):
    """`POST /v1/chat/completions`."""

    messages: list[Message] = Field(min_length=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    logprobs: Annotated[bool | None, _only_falsy("logprobs are not supported")] = None
    top_logprobs: int | None = None
    response_format: ResponseFormat | None = None
    tools: Annotated[list[Any] | None, _only_falsy("tools are not supported")] = None
    functions: Annotated[list[Any] | None, _only_falsy("functions are not supported")] = None

    @property
    def output_limit(self) -> int | None:
        """max_completion_tokens, which supersedes the deprecated max_tokens."""
        return self.max_completion_tokens or self.max_tokens


class CompletionRequest(_CommonRequest):
    """`POST /v1/completions` with a single prompt."""

    prompt: Annotated[str, BeforeValidator(_as_single_prompt)]
    best_of: Annotated[int | None, _only_one("best_of")] = None
    echo: Annotated[bool | None, _only_falsy("echo is not supported")] = None
    suffix: Annotated[str | None, _only_falsy("suffix is not supported")] = None
    logprobs: Annotated[int | None, _only_falsy("logprobs are not supported")] = None


AnyRequest = ChatCompletionRequest | CompletionRequest
_R = TypeVar("_R", ChatCompletionRequest, CompletionRequest)


def parse_request(model: type[_R], body: bytes | str) -> _R:
    """Parse a raw JSON body into `model`; a bad body raises InvalidRequest."""
    try:
        return model.model_validate_json(body)
    except ValidationError as exc:
        raise validation_error_to_api(exc) from None


_LOC_PREFIXES = frozenset({"body", "query", "path", "header", "cookie"})


def validation_error_to_api(exc: ValidationError | RequestValidationError) -> InvalidRequest:
    """The first validation error as a 400 naming the offending field, e.g. `messages.0.role`."""
    error = exc.errors()[0]
    loc = list(error["loc"])
    if loc and loc[0] in _LOC_PREFIXES:  # FastAPI prefixes where the value came from
        loc = loc[1:]
    kind = error["type"]
    if kind == "json_invalid":
        detail = error.get("ctx", {}).get("error", "")
        return InvalidRequest(f"The request body is not valid JSON: {detail}", code="invalid_json")
    param = ".".join(str(part) for part in loc) or None
    if param is None:
        return InvalidRequest("The request body must be a JSON object.", code="invalid_type")
    if error["msg"] == "Field required":
        return InvalidRequest(f"Missing required parameter: '{param}'.", param=param,
                              code="missing_required_parameter")
    return InvalidRequest(f"{param}: {error['msg']}", param=param, code=_error_code(kind))


def _error_code(kind: str) -> str:
    if kind == "unsupported_value":
        return kind
    if kind == "missing":
        return "missing_required_parameter"
    return "invalid_type" if kind.endswith(("_type", "_parsing")) else "invalid_value"


def to_generate_request(req: AnyRequest, request_id: str) -> GenerateRequest:
    """The agent's request for `req`; unset knobs keep the agent's defaults."""
    knobs: dict[str, Any] = {
        "max_tokens": req.output_limit,
        "temperature": req.temperature,
        "top_p": req.top_p,
        "seed": req.seed,
        "stop": tuple(req.stop) if req.stop else None,
    }
    sampling = Sampling(**{k: v for k, v in knobs.items() if v is not None})
    if isinstance(req, ChatCompletionRequest):
        messages = tuple(ChatMessage(m.role, m.text) for m in req.messages)
        return GenerateRequest(request_id=request_id, model=req.model, messages=messages,
                               sampling=sampling)
    return GenerateRequest(request_id=request_id, model=req.model, text=req.prompt,
                           sampling=sampling)


# --- responses ----------------------------------------------------------------------------------

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
    choice = {"index": 0, "message": message, "logprobs": None,
              "finish_reason": finish_reason(finished.finish_reason)}
    return {"id": f"chatcmpl-{request_id}", "object": "chat.completion", "created": created,
            "model": model, "choices": [choice], "usage": usage_dict(finished.usage)}


def text_completion(
    *, request_id: str, model: str, created: int, text: str, finished: Finished
) -> dict[str, Any]:
    """A whole `text_completion` response."""
    choice = {"text": text, "index": 0, "logprobs": None,
              "finish_reason": finish_reason(finished.finish_reason)}
    return {"id": f"cmpl-{request_id}", "object": "text_completion", "created": created,
            "model": model, "choices": [choice], "usage": usage_dict(finished.usage)}


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
        head = {"id": f"{self._id_prefix}-{request_id}", "object": self._object,
                "created": created, "model": model}
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
        return self._frame({"index": 0, "delta": {"role": "assistant", "content": ""},
                            "logprobs": None, "finish_reason": None})

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
