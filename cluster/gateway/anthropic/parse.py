"""The Anthropic wire format, requests: `POST /v1/messages` and `POST /v1/messages/count_tokens`,
their models and their conversion for the agent.

Pure: no I/O, no clock, no framework. The gateway parses a body with `parse_messages` (or
`parse_count_tokens`) and hands `to_generate_request(...)` to a node; encode.py and stream.py
shape what comes back. What a node would refuse, and what meterless cannot do (images,
documents, server tools), is refused here first with the parameter named.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Annotated, Any, Literal, TypeVar

from pydantic import (
    AfterValidator,
    BeforeValidator,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
)

from cluster.gateway.anthropic.tools import (
    OutputConfig,
    ThinkingParam,
    ToolChoiceParam,
    ToolParam,
    check_tool_choice,
    unique_names,
)
from cluster.gateway.bounds import MAX_STOPS, MAX_TOKEN_COUNT, RequestedModel, StopText, TokenCount
from cluster.gateway.openai.parse import validation_error_to_api
from cluster.gateway.openai.tools import Lenient, field_error, unsupported
from node_agent.types import ChatMessage, GenerateRequest, Sampling, ToolCall, ToolChoice

# Claude Code's attribution line (cc_version=...; cc_entrypoint=...;), new with every request.
VOLATILE_PREFIX = "x-anthropic-billing-header:"


class TextBlock(Lenient):
    """A text block; `cache_control` and `citations` pass as unknown fields."""

    type: Literal["text"]
    text: str


def _as_text_blocks(value: Any) -> Any:
    return [{"type": "text", "text": value}] if isinstance(value, str) else value


def _only_text(value: Any) -> Any:
    kind = value.get("type") if isinstance(value, dict) else None
    if isinstance(kind, str) and kind != "text":
        raise unsupported(f"content block type {kind!r} is not supported here, only 'text'")
    return value


TextBlocks = Annotated[
    list[Annotated[TextBlock, BeforeValidator(_only_text)]], BeforeValidator(_as_text_blocks)
]


class ToolUseBlock(Lenient):
    """An assistant's call of a tool, with its input."""

    type: Literal["tool_use"]
    id: str = Field(min_length=1)
    name: str = Field(min_length=1)
    input: dict[str, Any]


class ToolResultBlock(Lenient):
    """What a tool call returned, in a user turn; `is_error` is carried by the text alone."""

    type: Literal["tool_result"]
    tool_use_id: str = Field(min_length=1)
    content: TextBlocks = []
    is_error: bool | None = None

    @property
    def text(self) -> str:
        """The result's text blocks joined by newlines."""
        return joined(self.content)


class ThinkingBlock(Lenient):
    """An assistant's reasoning, sent back; meterless signs nothing, so any signature passes."""

    type: Literal["thinking"]
    thinking: str
    signature: str | None = None


class RedactedThinkingBlock(Lenient):
    """Encrypted reasoning from Anthropic's own models: nothing a local model can read."""

    type: Literal["redacted_thinking"]


Block = TextBlock | ToolUseBlock | ToolResultBlock | ThinkingBlock | RedactedThinkingBlock
_BLOCKS: dict[str, type[Block]] = {
    "text": TextBlock,
    "tool_use": ToolUseBlock,
    "tool_result": ToolResultBlock,
    "thinking": ThinkingBlock,
    "redacted_thinking": RedactedThinkingBlock,
}
_TURN_BLOCKS = {
    "user": ("text", "tool_result"),
    "assistant": ("text", "tool_use", "thinking", "redacted_thinking"),
    "system": ("text",),
}


def _as_block(value: Any) -> Any:
    # Dispatch by `type` here, so an error is located at the block (messages.0.content.1.id),
    # not under a discriminator's tag, and an image or document is refused by name.
    if not isinstance(value, dict):
        raise field_error("model_type", "a content block must be an object")
    kind = value.get("type")
    if kind is None:
        raise field_error("missing", "a content block needs a type")
    if not isinstance(kind, str) or kind not in _BLOCKS:
        raise unsupported(
            f"content block type {kind!r} is not supported; only text, tool_use, tool_result, "
            "thinking and redacted_thinking are"
        )
    return _BLOCKS[kind].model_validate(value)


def joined(blocks: Sequence[Block]) -> str:
    """The text blocks among `blocks`, joined by newlines (as the OpenAI dialect joins parts)."""
    return "\n".join(b.text for b in blocks if isinstance(b, TextBlock))


class Message(Lenient):
    """One turn: a string, or blocks of the kinds its role may hold."""

    # "system": a note between turns (Claude Code's environment block), as its beta allows.
    role: Literal["user", "assistant", "system"]
    content: Annotated[
        list[Annotated[Block, BeforeValidator(_as_block)]], BeforeValidator(_as_text_blocks)
    ]

    @field_validator("content")
    @classmethod
    def _blocks_for_role(cls, content: list[Block], info: ValidationInfo) -> list[Block]:
        role = info.data.get("role", "user")
        for block in content:
            if block.type not in _TURN_BLOCKS[role]:
                message = f"a {role} turn cannot hold a {block.type} block"
                raise field_error("invalid_value", message)
        return content


class CountTokensRequest(Lenient):
    """`POST /v1/messages/count_tokens`: what the prompt would be, without sampling."""

    model: RequestedModel
    messages: list[Message] = Field(min_length=1)
    system: TextBlocks | None = None
    tools: Annotated[list[ToolParam] | None, AfterValidator(unique_names)] = None
    tool_choice: ToolChoiceParam | None = None
    thinking: ThinkingParam | None = None
    output_config: OutputConfig | None = None

    @field_validator("tool_choice")
    @classmethod
    def _choice_among_tools(cls, choice: ToolChoiceParam | None, info: ValidationInfo) -> Any:
        return check_tool_choice(choice, info.data.get("tools"))

    def key_parts(self) -> list[tuple[str, str]]:
        """What the prompt is rendered from, for prefix keys: the tools, then each message with
        its calls, as the node will see them (so without the volatile attribution line)."""
        parts = [(m.role, m.content + _calls_text(m)) for m in chat_messages(self)]
        if self.tools:
            tools = [(t.name, t.description or "", t.input_schema) for t in self.tools]
            parts.insert(0, ("tools", json.dumps(tools)))
        return parts


def _calls_text(m: ChatMessage) -> str:
    return "".join(c.name + c.arguments for c in m.tool_calls)


class MessagesRequest(CountTokensRequest):
    """`POST /v1/messages`."""

    max_tokens: TokenCount
    stop_sequences: (
        Annotated[list[Annotated[StopText, Field(min_length=1)]], Field(max_length=MAX_STOPS)]
        | None
    ) = None
    temperature: float | None = Field(default=None, ge=0, le=1)
    top_p: float | None = Field(default=None, gt=0, le=1)
    top_k: int | None = Field(
        default=None, ge=0, le=MAX_TOKEN_COUNT
    )  # accepted and ignored: no engine knob for it
    stream: bool | None = False
    metadata: dict[str, Any] | None = None  # user_id: accepted and ignored


_R = TypeVar("_R", MessagesRequest, CountTokensRequest)


def _parse(model: type[_R], body: bytes | str) -> _R:
    try:
        return model.model_validate_json(body)
    except ValidationError as exc:
        raise validation_error_to_api(exc) from None


def parse_messages(body: bytes | str) -> MessagesRequest:
    """Parse a `/v1/messages` body; a bad one raises InvalidRequest naming the parameter."""
    return _parse(MessagesRequest, body)


def parse_count_tokens(body: bytes | str) -> CountTokensRequest:
    """Parse a `/v1/messages/count_tokens` body; a bad one raises InvalidRequest."""
    return _parse(CountTokensRequest, body)


# Anthropic's models think only when asked to; so do the templates that can be told.
NO_THINKING = ThinkingParam(type="disabled")


def to_generate_request(
    req: MessagesRequest | CountTokensRequest, request_id: str
) -> GenerateRequest:
    """The agent's request for `req`; a token count's asks for one token (only its prompt
    matters); unset knobs keep the agent's defaults."""
    return GenerateRequest(
        request_id=request_id,
        model=req.model,
        messages=chat_messages(req),
        sampling=_sampling(req) if isinstance(req, MessagesRequest) else Sampling(max_tokens=1),
        tools=tuple(t.to_tool() for t in req.tools or ()),
        tool_choice=req.tool_choice.to_tool_choice() if req.tool_choice else ToolChoice(),
        parallel_tool_calls=not (req.tool_choice and req.tool_choice.disable_parallel_tool_use),
        template_options=(req.thinking or NO_THINKING).template_options(),
        constraint=req.output_config.constraint() if req.output_config else None,
    )


def _sampling(req: MessagesRequest) -> Sampling:
    knobs: dict[str, Any] = {
        "max_tokens": req.max_tokens,
        "temperature": req.temperature,
        "top_p": req.top_p,
        "stop": tuple(req.stop_sequences) if req.stop_sequences else None,
    }
    return Sampling(**{k: v for k, v in knobs.items() if v is not None})


def stable_system_text(blocks: Sequence[TextBlock]) -> str:
    """The system prompt, its blocks joined by newlines, without Claude Code's attribution line.

    The line is request metadata, not instructions, and it changes every request: left first in
    the prompt it would defeat both the gateway's prefix keys and the node's prompt cache."""
    texts = (_without_volatile(b.text) for b in blocks)
    return "\n".join(t for t in texts if t)


def _without_volatile(text: str) -> str:
    if VOLATILE_PREFIX not in text:
        return text
    return "\n".join(line for line in text.split("\n") if not line.startswith(VOLATILE_PREFIX))


def chat_messages(req: CountTokensRequest) -> tuple[ChatMessage, ...]:
    """The agent's messages: the system prompt first, each tool result as a tool message named
    after its call, and an assistant's text, calls and reasoning in one message."""
    system = stable_system_text(req.system or ())
    out = [ChatMessage("system", system)] if system else []
    names: dict[str, str] = {}  # tool_use id -> tool name, from the assistant turns so far
    for m in req.messages:
        if m.role == "assistant":
            out.append(_assistant(m.content))
            names.update((c.id, c.name) for c in out[-1].tool_calls)
        elif m.role == "system":
            out.append(_reminder(joined(m.content)))
        else:
            out.extend(_user(m.content, names.get))
    return tuple(out)


def _assistant(blocks: list[Block]) -> ChatMessage:
    calls = tuple(
        # Unescaped, as the model wrote it, so the prompt renders back what it generated.
        ToolCall(id=b.id, name=b.name, arguments=json.dumps(b.input, ensure_ascii=False))
        for b in blocks
        if isinstance(b, ToolUseBlock)
    )
    reasoning = "\n".join(b.thinking for b in blocks if isinstance(b, ThinkingBlock))
    return ChatMessage("assistant", joined(blocks), tool_calls=calls, reasoning=reasoning)


def _reminder(text: str) -> ChatMessage:
    """A system note between turns, as a user turn: chat templates take a system message only
    first, and this is how Claude Code itself sends it to servers that refuse the role."""
    return ChatMessage("user", f"<system-reminder>\n{text}\n</system-reminder>")


def _user(blocks: list[Block], name_of: Callable[[str], str | None]) -> list[ChatMessage]:
    # Results first, in order: chat templates expect them right after the calls they answer.
    out = [
        ChatMessage("tool", b.text, tool_call_id=b.tool_use_id, name=name_of(b.tool_use_id) or "")
        for b in blocks
        if isinstance(b, ToolResultBlock)
    ]
    text = joined(blocks)
    if text or not out:
        out.append(ChatMessage("user", text))
    return out
