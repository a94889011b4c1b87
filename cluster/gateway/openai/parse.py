"""The OpenAI wire format, requests: the request models and their conversion for the agent.

Pure: no I/O, no clock, no framework. The gateway parses a body with `parse_request` and hands
`to_generate_request(...)` to a node; cluster/gateway/openai/encode.py shapes what comes back.
Whatever a node would have to refuse (a broken JSON schema, a tool choice naming no tool) is
refused here first, with the parameter named, as OpenAI does.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Annotated, Any, Literal, TypeVar

from pydantic import (
    AfterValidator,
    BeforeValidator,
    Field,
    InstanceOf,
    ValidationError,
    ValidationInfo,
    field_validator,
)

from cluster.errors import InvalidRequest
from cluster.gateway.bounds import MAX_STOPS, RequestedModel, Seed, StopText, TokenCount
from cluster.gateway.openai.tools import (
    FunctionTool,
    Lenient,
    ResponseFormat,
    as_tool_choice,
    check_tool_choice,
    field_error,
    only_tag,
    unique_names,
    unsupported,
)
from node_agent.types import (
    ChatMessage,
    GenerateRequest,
    Sampling,
    ToolCall,
    ToolChoice,
)

if TYPE_CHECKING:
    from fastapi.exceptions import RequestValidationError

MAX_CHOICES = 8  # `n`: the samples of one request, each a generation of its own
MAX_TOP_LOGPROBS = 20  # chat's `top_logprobs`, as OpenAI caps it
MAX_LEGACY_LOGPROBS = 5  # /v1/completions' `logprobs`, as OpenAI caps it


def _only_falsy(message: str) -> AfterValidator:
    """Accept a field only when absent, null, false, zero or empty: then ignoring it is harmless."""

    def check(value: Any) -> Any:
        if value:
            raise unsupported(message)
        return value

    return AfterValidator(check)


def _as_stop_list(value: Any) -> Any:
    if isinstance(value, str):
        return [value]
    if value is None or isinstance(value, list):
        return value
    raise field_error("list_type", "Input should be a string or a list of strings")


def _as_single_prompt(value: Any) -> Any:
    # The official client types allow batches and token ids; the agent takes one text.
    if isinstance(value, list):
        if len(value) == 1 and isinstance(value[0], str):
            return value[0]
        raise unsupported("several prompts and token-id prompts are not supported; send one")
    return value


def _as_content_parts(value: Any) -> Any:
    if isinstance(value, str):
        return [{"type": "text", "text": value}]
    if value is None or isinstance(value, list):
        return value
    raise field_error("list_type", "Input should be a string or a list of content parts")


def _as_json_text(value: Any) -> Any:
    # Arguments are JSON text on the wire; some clients send back the object itself.
    return json.dumps(value) if isinstance(value, dict) else value


class ContentPart(Lenient):
    """One part of a message's content; only text parts are supported."""

    type: Annotated[str, only_tag("text", "content part type")]
    text: str


class FunctionCall(Lenient):
    """The function an assistant called: its name and its arguments as JSON text."""

    name: str
    arguments: Annotated[str, BeforeValidator(_as_json_text)] = "{}"


class ToolCallParam(Lenient):
    """One call in an assistant message's `tool_calls`."""

    id: str
    type: Annotated[str, only_tag("function", "tool call type")] = "function"
    function: FunctionCall


class Message(Lenient):
    """One chat message; `content` is a string or text parts (joined by newlines)."""

    role: Literal["system", "user", "assistant", "developer", "tool"]
    content: Annotated[list[ContentPart] | None, BeforeValidator(_as_content_parts)] = Field(
        default=None, validate_default=True
    )
    tool_calls: list[ToolCallParam] | None = None
    tool_call_id: str | None = Field(default=None, validate_default=True)
    name: str | None = None
    reasoning_content: str | None = None  # the assistant's reasoning, sent back (vLLM's name)
    reasoning: str | None = None  # the same, by its newer name

    @field_validator("content")
    @classmethod
    def _content_required(cls, content: Any, info: ValidationInfo) -> Any:
        # Only an assistant turn may omit content (it carried tool calls instead).
        role = info.data.get("role")
        if content is None and role != "assistant":
            raise field_error("missing", f"content is required for role {role!r}")
        return content

    @field_validator("tool_call_id")
    @classmethod
    def _answers_a_call(cls, call_id: str | None, info: ValidationInfo) -> str | None:
        if call_id is None and info.data.get("role") == "tool":
            raise field_error("missing", "a tool message needs the tool_call_id it answers")
        return call_id

    @property
    def text(self) -> str:
        """The content as one string, text parts joined by newlines as vLLM does."""
        return "\n".join(part.text for part in self.content or ())


class StreamOptions(Lenient):
    """`stream_options`; only `include_usage` changes anything."""

    include_usage: bool | None = None


class _CommonRequest(Lenient):
    """Fields shared by chat and text completions."""

    model: RequestedModel
    max_tokens: TokenCount | None = None
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, gt=0, le=1)
    n: int | None = Field(default=None, ge=1, le=MAX_CHOICES)
    # The count's bound on the list itself: on the optional it would fail on null, a TypeError.
    stop: Annotated[
        Annotated[list[StopText], Field(max_length=MAX_STOPS)] | None,
        BeforeValidator(_as_stop_list),
    ] = None
    seed: Seed | None = None
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

    @property
    def choices(self) -> int:
        """How many choices to answer with (`n`), each a generation of its own."""
        return self.n or 1

    @property
    def logprob_alternatives(self) -> int | None:
        """None: no logprobs; else how many alternatives to give with each token."""
        return None


class ChatCompletionRequest(_CommonRequest):
    """`POST /v1/chat/completions`."""

    messages: list[Message] = Field(min_length=1)
    max_completion_tokens: TokenCount | None = None
    logprobs: bool | None = None
    top_logprobs: int | None = Field(default=None, ge=0, le=MAX_TOP_LOGPROBS)
    response_format: ResponseFormat | None = None
    tools: Annotated[list[FunctionTool] | None, AfterValidator(unique_names)] = None
    tool_choice: Annotated[InstanceOf[ToolChoice] | None, BeforeValidator(as_tool_choice)] = None
    parallel_tool_calls: bool | None = None
    chat_template_kwargs: dict[str, Any] | None = None  # e.g. {"enable_thinking": false}
    functions: Annotated[
        list[Any] | None, _only_falsy("functions are not supported; use tools")
    ] = None
    audio: Annotated[dict[str, Any] | None, _only_falsy("audio output is not supported")] = None
    modalities: list[Literal["text"]] | None = None

    @field_validator("top_logprobs")
    @classmethod
    def _with_logprobs(cls, top: int | None, info: ValidationInfo) -> int | None:
        # 0 asks for nothing, so it passes without logprobs (some clients always send it).
        if top and not info.data.get("logprobs"):
            raise field_error("invalid_value", "'logprobs' must be true to use 'top_logprobs'")
        return top

    @field_validator("tool_choice")
    @classmethod
    def _choice_among_tools(cls, choice: ToolChoice | None, info: ValidationInfo) -> Any:
        return check_tool_choice(choice, info.data.get("tools"))

    @property
    def output_limit(self) -> int | None:
        """max_completion_tokens, which supersedes the deprecated max_tokens."""
        return self.max_completion_tokens or self.max_tokens

    @property
    def logprob_alternatives(self) -> int | None:
        """None without `logprobs: true`; else `top_logprobs` (0 by default)."""
        return (self.top_logprobs or 0) if self.logprobs else None

    def key_parts(self) -> list[tuple[str, str]]:
        """What the prompt is rendered from, for prefix keys: the tools, then each message
        with its calls (the template puts the tools ahead of the conversation)."""
        parts: list[tuple[str, str]] = [(m.role, _with_calls(m)) for m in self.messages]
        if self.tools:
            tools = json.dumps([t.model_dump(mode="json", by_alias=True) for t in self.tools])
            parts.insert(0, ("tools", tools))
        return parts


def _with_calls(m: Message) -> str:
    if not m.tool_calls:
        return m.text
    return m.text + "".join(c.function.name + c.function.arguments for c in m.tool_calls)


class CompletionRequest(_CommonRequest):
    """`POST /v1/completions` with a single prompt."""

    prompt: Annotated[str, BeforeValidator(_as_single_prompt)]
    best_of: Annotated[int, Field(ge=1, le=MAX_CHOICES)] | None = Field(
        default=None, validate_default=True
    )
    echo: Annotated[bool | None, _only_falsy("echo is not supported")] = None
    suffix: Annotated[str | None, _only_falsy("suffix is not supported")] = None
    logprobs: int | None = Field(default=None, ge=0, le=MAX_LEGACY_LOGPROBS)

    @field_validator("best_of")
    @classmethod
    def _best_of_is_n(cls, best_of: int | None, info: ValidationInfo) -> int | None:
        # Ranking more samples than are returned would need the sequences' total logprobs.
        if best_of is not None and best_of != (info.data.get("n") or 1):
            raise unsupported("only best_of equal to n is supported")
        return best_of

    @property
    def logprob_alternatives(self) -> int | None:
        """The legacy `logprobs`: how many alternatives per token, None for no logprobs."""
        return self.logprobs


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
    if kind in ("unsupported_value", "invalid_schema"):
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
    top_logprobs = req.logprob_alternatives
    if not isinstance(req, ChatCompletionRequest):
        return GenerateRequest(
            request_id=request_id,
            model=req.model,
            text=req.prompt,
            sampling=sampling,
            top_logprobs=top_logprobs,
        )
    kwargs = req.chat_template_kwargs
    return GenerateRequest(
        request_id=request_id,
        model=req.model,
        messages=chat_messages(req.messages),
        sampling=sampling,
        tools=tuple(t.to_tool() for t in req.tools or ()),
        tool_choice=req.tool_choice or ToolChoice(),
        parallel_tool_calls=req.parallel_tool_calls is not False,
        template_options=json.dumps(kwargs) if kwargs else "",
        constraint=req.response_format.constraint() if req.response_format else None,
        top_logprobs=top_logprobs,
    )


def chat_messages(messages: list[Message]) -> tuple[ChatMessage, ...]:
    """The agent's messages: developer turns as system ones, the leading system turns merged
    into one (several templates refuse a second), and each tool result named after its call."""
    out: list[ChatMessage] = []
    names: dict[str, str] = {}  # call id -> function name, from the assistant turns so far
    for m in messages:
        role = "system" if m.role == "developer" else m.role
        if role == "system" and len(out) == 1 and out[0].role == "system":
            out[0] = ChatMessage("system", f"{out[0].content}\n\n{m.text}")
            continue
        assistant = role == "assistant"  # only an assistant's calls and reasoning are kept
        calls = tuple(
            ToolCall(id=c.id, name=c.function.name, arguments=c.function.arguments)
            for c in ((m.tool_calls or ()) if assistant else ())
        )
        names.update((c.id, c.name) for c in calls)
        call_id = m.tool_call_id or ""
        out.append(
            ChatMessage(
                role,
                m.text,
                tool_calls=calls,
                tool_call_id=call_id if role == "tool" else "",
                name=(m.name or names.get(call_id, "")) if role == "tool" else "",
                reasoning=(m.reasoning_content or m.reasoning or "") if assistant else "",
            )
        )
    return tuple(out)
