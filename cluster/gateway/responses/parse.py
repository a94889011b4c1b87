"""The Responses wire format, requests: `POST /v1/responses` parsed and converted for the agent.

Pure: no I/O, no clock, no framework. Stateless: every request carries its whole conversation
(`input` items), as Codex sends it with `store: false`; whatever needs stored state
(`previous_response_id`, `conversation`, `store: true`, background responses) is a 400. The items
become chat turns and go through chat's own conversion (cluster/gateway/openai/parse.py), so
both dialects render a conversation alike; encode.py and stream.py shape what comes back.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BeforeValidator,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError

from cluster.gateway.bounds import RequestedModel, TokenCount
from cluster.gateway.openai.parse import Message, chat_messages, validation_error_to_api
from cluster.gateway.openai.tools import Lenient, field_error, unsupported
from cluster.gateway.responses.tools import (
    TOOL_TYPES,
    CustomTool,
    ReasoningConfig,
    TextConfig,
    Tools,
    check_tool_choice,
    tool_choice,
)
from node_agent.types import ChatMessage, GenerateRequest, Sampling, ToolChoice

MAX_TOP_LOGPROBS = 20  # as OpenAI caps it
LOGPROBS_INCLUDE = "message.output_text.logprobs"  # the `include` entry that asks for logprobs
STATELESS = "this endpoint is stateless; send the whole conversation as input, with store: false"
ITEM_TYPES = (
    "message",
    "function_call",
    "function_call_output",
    "reasoning",
    "custom_tool_call",
    "custom_tool_call_output",
)
TEXT_PARTS = ("input_text", "output_text", "refusal")


def _refused(message: str) -> AfterValidator:
    """Accept a field only when absent, null, false or empty: then ignoring it is harmless."""

    def check(value: Any) -> Any:
        if value:
            raise unsupported(message)
        return value

    return AfterValidator(check)


def _as_parts(value: Any) -> Any:
    if isinstance(value, str):
        return [{"type": "input_text", "text": value}]
    return value


def _text_part(value: Any) -> Any:
    if isinstance(value, dict) and value.get("type") not in TEXT_PARTS:
        raise unsupported(f"content part type {value.get('type')!r} is not supported, only text")
    return value


def _as_json_text(value: Any) -> Any:
    # Arguments are JSON text on the wire; some clients send back the object itself.
    return json.dumps(value) if isinstance(value, dict) else value


class ContentPart(Lenient):
    """A text part of a message or a tool's output (`refusal` parts carry `refusal`)."""

    type: Literal["input_text", "output_text", "refusal"]
    text: str | None = Field(default=None, validate_default=True)
    refusal: str | None = None

    @field_validator("text")
    @classmethod
    def _text_given(cls, text: str | None, info: ValidationInfo) -> str | None:
        if text is None and info.data.get("type") != "refusal":
            raise field_error("missing", "a text part needs its text")
        return text

    @property
    def value(self) -> str:
        """The part's text."""
        return self.text if self.text is not None else self.refusal or ""


Parts = Annotated[
    list[Annotated[ContentPart, BeforeValidator(_text_part)]], BeforeValidator(_as_parts)
]


def _joined(parts: list[ContentPart]) -> str:
    return "\n".join(part.value for part in parts)


class MessageItem(Lenient):
    """`{"type": "message", "role", "content"}`; content is a string or text parts."""

    type: Literal["message"]
    role: Literal["user", "assistant", "system", "developer"]
    content: Parts


class FunctionCallItem(Lenient):
    """A function call the model made earlier: `{call_id, name, arguments}`."""

    type: Literal["function_call"]
    call_id: str = Field(min_length=1)
    name: str = Field(min_length=1)
    arguments: Annotated[str, BeforeValidator(_as_json_text)] = "{}"

    def call(self) -> dict[str, Any]:
        """The call as chat's `tool_calls` entry."""
        return {"id": self.call_id, "function": {"name": self.name, "arguments": self.arguments}}


class CustomToolCallItem(Lenient):
    """A custom tool call made earlier: `{call_id, name, input}`."""

    type: Literal["custom_tool_call"]
    call_id: str = Field(min_length=1)
    name: str = Field(min_length=1)
    input: str

    def call(self) -> dict[str, Any]:
        """The call as the model made it: the function the custom tool became."""
        arguments = json.dumps({"input": self.input})
        return {"id": self.call_id, "function": {"name": self.name, "arguments": arguments}}


class ToolOutputItem(Lenient):
    """A tool's result: `function_call_output` or `custom_tool_call_output`."""

    type: Literal["function_call_output", "custom_tool_call_output"]
    call_id: str = Field(min_length=1)
    output: Parts


class ReasoningText(Lenient):
    """One entry of a reasoning item's `summary` or `content`."""

    type: str
    text: str


class ReasoningItem(Lenient):
    """The model's earlier reasoning; `encrypted_content` is opaque and dropped."""

    type: Literal["reasoning"]
    summary: list[ReasoningText] = []
    content: list[ReasoningText] | None = None
    encrypted_content: str | None = None

    @property
    def text(self) -> str:
        """The reasoning itself, else its summary."""
        return "\n".join(p.text for p in self.content or self.summary)


def _typed_item(value: Any) -> Any:
    # An item without a type but with a role is a message (EasyInputMessage).
    if isinstance(value, dict) and "type" not in value and "role" in value:
        return {**value, "type": "message"}
    if isinstance(value, dict) and value.get("type") not in ITEM_TYPES:
        kind = value.get("type")
        stored = " (this endpoint is stateless)" if kind == "item_reference" else ""
        raise unsupported(f"input item type {kind!r} is not supported{stored}")
    return value


def _as_items(value: Any) -> Any:
    if isinstance(value, str):
        return [{"type": "message", "role": "user", "content": value}]
    return value


Item = Annotated[
    MessageItem | FunctionCallItem | CustomToolCallItem | ToolOutputItem | ReasoningItem,
    Field(discriminator="type"),
    BeforeValidator(_typed_item),
]


class ResponsesRequest(Lenient):
    """`POST /v1/responses`, stateless."""

    model: RequestedModel
    input: Annotated[list[Item], BeforeValidator(_as_items), Field(min_length=1)]
    instructions: str | None = None
    tools: Tools = None
    tool_choice: Any = None  # kept as sent, for the echo; `choice` is the agent's
    parallel_tool_calls: bool | None = None
    text: TextConfig | None = None
    reasoning: ReasoningConfig | None = None
    max_output_tokens: TokenCount | None = None
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, gt=0, le=1)
    top_logprobs: int | None = Field(default=None, ge=0, le=MAX_TOP_LOGPROBS)
    include: list[str] | None = None  # e.g. reasoning.encrypted_content: accepted, none is made
    stream: bool | None = False
    # OpenAI stores by default when `store` is absent; only an explicit true is refused, since a
    # client that omits it can only lean on the stored response through previous_response_id.
    store: Annotated[bool | None, _refused(STATELESS)] = None
    previous_response_id: Annotated[str | None, _refused(STATELESS)] = None
    conversation: Annotated[Any, _refused(STATELESS)] = None
    background: Annotated[bool | None, _refused("background responses are not supported")] = None
    prompt: Annotated[Any, _refused("stored prompt templates are not supported")] = None
    # Accepted and ignored: they never change the response's shape. `truncation: auto` drops
    # nothing: a conversation too long for the model fails with context_length_exceeded.
    truncation: Literal["auto", "disabled"] | None = None
    max_tool_calls: TokenCount | None = None
    metadata: dict[str, str] | None = None
    prompt_cache_key: str | None = None
    user: str | None = None
    safety_identifier: str | None = None
    service_tier: str | None = None

    @field_validator("tool_choice")
    @classmethod
    def _choice_among_tools(cls, value: Any, info: ValidationInfo) -> Any:
        return check_tool_choice(value, info.data.get("tools"))

    @property
    def choice(self) -> ToolChoice:
        """The agent's tool choice."""
        return tool_choice(self.tool_choice) or ToolChoice()

    @property
    def custom_tools(self) -> frozenset[str]:
        """The names of the custom tools, whose calls go back as `custom_tool_call` items."""
        return frozenset(t.name for t in self.tools or () if isinstance(t, CustomTool))

    @property
    def logprob_alternatives(self) -> int | None:
        """None: no logprobs; else how many alternatives to give with each token."""
        if LOGPROBS_INCLUDE in (self.include or ()) or self.top_logprobs:
            return self.top_logprobs or 0
        return None

    def messages(self) -> tuple[ChatMessage, ...]:
        """The conversation as the agent's messages, converted as chat converts its own."""
        return chat_messages(_turns(self))

    def key_parts(self) -> list[tuple[str, str]]:
        """What the prompt is rendered from, for prefix keys: the tools, then the instructions
        and each item (the template puts the tools ahead of the conversation)."""
        parts = [(m.role, _with_calls(m)) for m in self.messages()]
        if self.tools:
            parts.insert(0, ("tools", json.dumps(self.echo()["tools"])))
        return parts

    def echo(self) -> dict[str, Any]:
        """The request's settings as the response object repeats them."""
        text = self.text.format if self.text and self.text.format else None
        return {
            "instructions": self.instructions,
            "tools": [t.model_dump(by_alias=True, exclude_none=True) for t in self.tools or ()],
            "tool_choice": "auto" if self.tool_choice is None else self.tool_choice,
            "parallel_tool_calls": self.parallel_tool_calls is not False,
            "temperature": self.temperature,
            "top_p": self.top_p,
            "max_output_tokens": self.max_output_tokens,
            "top_logprobs": self.top_logprobs,
            "text": {"format": text.echo() if text else {"type": "text"}},
            "reasoning": self.reasoning.model_dump() if self.reasoning else None,
            "truncation": self.truncation or "disabled",
            "metadata": self.metadata or {},
            "prompt_cache_key": self.prompt_cache_key,
            "user": self.user,
            "store": False,
            "background": False,
            "previous_response_id": None,
        }


def _with_calls(m: ChatMessage) -> str:
    return m.content + "".join(c.name + c.arguments for c in m.tool_calls)


def _turns(req: ResponsesRequest) -> list[Message]:
    """The items as chat turns: calls that follow an assistant message or each other join one
    assistant turn, and a reasoning item goes with the assistant turn right after it."""
    turns: list[dict[str, Any]] = []
    if req.instructions:
        turns.append({"role": "system", "content": req.instructions})
    reasoning, joins = "", False  # joins: the next call belongs to the last turn
    for item in req.input:
        if isinstance(item, ReasoningItem):
            reasoning, joins = item.text, False
        elif isinstance(item, FunctionCallItem | CustomToolCallItem):
            if joins:
                turns[-1]["tool_calls"].append(item.call())
            else:
                turns.append({"role": "assistant", "tool_calls": [item.call()]})
                turns[-1]["reasoning"] = reasoning
            reasoning, joins = "", True
        else:
            turns.append(_turn(item, reasoning))
            reasoning, joins = "", turns[-1]["role"] == "assistant"
    return [Message.model_validate(turn) for turn in turns]


def _turn(item: MessageItem | ToolOutputItem, reasoning: str) -> dict[str, Any]:
    if isinstance(item, ToolOutputItem):
        return {"role": "tool", "content": _joined(item.output), "tool_call_id": item.call_id}
    turn: dict[str, Any] = {"role": item.role, "content": _joined(item.content), "tool_calls": []}
    if item.role == "assistant":
        turn["reasoning"] = reasoning
    return turn


def parse_response_request(body: bytes | str) -> ResponsesRequest:
    """Parse a raw JSON body; a bad body raises InvalidRequest naming the parameter."""
    try:
        return ResponsesRequest.model_validate_json(body)
    except ValidationError as exc:
        raise validation_error_to_api(_untagged(exc)) from None


_TAGS = frozenset(ITEM_TYPES) | frozenset(TOOL_TYPES)


def _untagged(exc: ValidationError) -> ValidationError:
    """`exc` without the union tags pydantic puts in a location (`input.0.message.role`), so
    the parameter is named as OpenAI names it (`input.0.role`)."""
    first = exc.errors()[0]
    loc = first["loc"]
    kept = tuple(p for i, p in enumerate(loc) if not (i and _is_tag(p, loc[i - 1])))
    if kept == loc:
        return exc
    error = PydanticCustomError(first["type"], "{message}", {"message": first["msg"]})
    detail = InitErrorDetails(type=error, loc=kept, input=first["input"])
    return ValidationError.from_exception_data(exc.title, [detail])


def _is_tag(part: str | int, before: str | int) -> bool:
    return isinstance(before, int) and part in _TAGS


def to_generate_request(req: ResponsesRequest, request_id: str) -> GenerateRequest:
    """The agent's request for `req`; unset knobs keep the agent's defaults. Custom tools
    become function tools taking one string (their grammar is not enforced yet)."""
    knobs: dict[str, Any] = {
        "max_tokens": req.max_output_tokens,
        "temperature": req.temperature,
        "top_p": req.top_p,
    }
    text = req.text.format if req.text and req.text.format else None
    return GenerateRequest(
        request_id=request_id,
        model=req.model,
        messages=req.messages(),
        sampling=Sampling(**{k: v for k, v in knobs.items() if v is not None}),
        tools=tuple(t.to_tool() for t in req.tools or ()),
        tool_choice=req.choice,
        parallel_tool_calls=req.parallel_tool_calls is not False,
        template_options=req.reasoning.template_options() if req.reasoning else "",
        constraint=text.constraint() if text else None,
        top_logprobs=req.logprob_alternatives,
    )
