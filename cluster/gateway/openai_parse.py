"""The OpenAI wire format, requests: the request models and their conversion for the agent.

Pure: no I/O, no clock, no framework. The gateway parses a body with `parse_request` and hands
`to_generate_request(...)` to a node; cluster/gateway/openai_encode.py shapes what comes back.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any, Literal, TypeVar

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

from cluster.errors import InvalidRequest
from node_agent.types import ChatMessage, GenerateRequest, Sampling

if TYPE_CHECKING:
    from fastapi.exceptions import RequestValidationError


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
        default=None, validate_default=True
    )

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
        return InvalidRequest(
            f"Missing required parameter: '{param}'.",
            param=param,
            code="missing_required_parameter",
        )
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
        return GenerateRequest(
            request_id=request_id, model=req.model, messages=messages, sampling=sampling
        )
    return GenerateRequest(
        request_id=request_id, model=req.model, text=req.prompt, sampling=sampling
    )
