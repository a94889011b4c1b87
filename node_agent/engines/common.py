"""What every engine checks the same way: request values, prompt rendering and length, memory.

Engines differ in how they run a model, not in what a valid request is: one set of rules here
means a request refused by one node is refused by every node, with the same error type.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from node_agent import hardware
from node_agent.errors import InvalidRequest, PromptTooLong
from node_agent.types import ChatMessage, GenerateRequest, Tool

MAX_STOP_STRINGS = 4
MAX_EMBED_INPUTS = 2048  # the gateway sends at most its own batch limit; this guards the node


def check_request(request: GenerateRequest) -> None:
    """Raise InvalidRequest unless the prompt is present and the sampling values are in range."""
    if request.text is not None and request.messages is not None:
        raise InvalidRequest("give either text or messages, not both")
    if not request.text and not request.messages:
        raise InvalidRequest("the prompt is empty")
    s = request.sampling
    # A budget beyond the context is capped by the room the prompt leaves (the engines do):
    # agent clients ask for their model's whole output budget whatever the model serving them.
    if s.max_tokens < 1:
        raise InvalidRequest(f"max_tokens must be at least 1, got {s.max_tokens}")
    if not 0 <= s.temperature <= 2:
        raise InvalidRequest(f"temperature must be between 0 and 2, got {s.temperature}")
    if not 0 < s.top_p <= 1:
        raise InvalidRequest(f"top_p must be in (0, 1], got {s.top_p}")
    if len(s.stop) > MAX_STOP_STRINGS or not all(s.stop):
        raise InvalidRequest(f"at most {MAX_STOP_STRINGS} stop strings, none of them empty")


def render_prompt(
    tokenizer: Any, request: GenerateRequest, *, constrained: bool = False
) -> list[int]:
    """Token ids of the prompt: raw text as is, or messages (with tools) through the chat template.

    `constrained`: a grammar holds the output from its first token, so a template that thinks
    is told not to (unless the client said otherwise) — the grammar has no room for reasoning.
    """
    if request.text is not None:
        return list(tokenizer.encode(request.text))
    kwargs = template_kwargs(request, constrained=constrained)
    try:
        ids = tokenizer.apply_chat_template(
            chat_messages(request), add_generation_prompt=True, **kwargs
        )
    except Exception as exc:  # jinja raises whatever the template author chose
        raise InvalidRequest(f"the chat template rejected the messages: {exc}") from exc
    # transformers 5 answers with a BatchEncoding; wrappers (mlx-lm's) with a plain list.
    return list(ids["input_ids"] if isinstance(ids, Mapping) else ids)


def chat_messages(request: GenerateRequest) -> list[dict[str, Any]]:
    """The messages as chat templates expect them: OpenAI's shape, arguments as dicts."""
    return [_message(m) for m in request.messages or ()]


def _message(m: ChatMessage) -> dict[str, Any]:
    out: dict[str, Any] = {"role": m.role, "content": m.content}
    if m.tool_calls:
        out["tool_calls"] = [
            {
                "id": c.id,
                "type": "function",
                "function": {"name": c.name, "arguments": _arguments(c.arguments)},
            }
            for c in m.tool_calls
        ]
    if m.tool_call_id:
        out["tool_call_id"] = m.tool_call_id
    if m.name:
        out["name"] = m.name
    if m.reasoning:
        out["reasoning_content"] = m.reasoning
    return out


def _arguments(text: str) -> Any:
    """A call's arguments as a dict: templates render them with `tojson` (GLM's, Qwen's)."""
    try:
        return json.loads(text) if text else {}
    except ValueError:
        return text  # not JSON: the template gets what the client sent


def template_kwargs(request: GenerateRequest, *, constrained: bool = False) -> dict[str, Any]:
    """The chat template's variables: the tools, and the client's options (e.g. thinking)."""
    try:
        options = json.loads(request.template_options) if request.template_options else {}
    except ValueError as exc:
        raise InvalidRequest(f"the chat template options are not JSON: {exc}") from None
    if not isinstance(options, dict):
        raise InvalidRequest("the chat template options must be a JSON object")
    if constrained:
        options.setdefault("enable_thinking", False)
    if request.tools:
        options["tools"] = [tool_json(t) for t in request.tools]
    return options


def tool_json(tool: Tool) -> dict[str, Any]:
    """A tool as chat templates expect it (OpenAI's function-tool shape)."""
    try:
        parameters = json.loads(tool.parameters)
    except ValueError as exc:
        raise InvalidRequest(f"tool {tool.name!r}: its parameters are not JSON: {exc}") from None
    function = {"name": tool.name, "description": tool.description, "parameters": parameters}
    return {"type": "function", "function": function}


def embedding_ids(tokenizer: Any, inputs: Sequence[str], context_length: int) -> list[list[int]]:
    """Each input's token ids, as the tokenizer encodes plain text; InvalidRequest for no inputs
    or an empty one, PromptTooLong for one beyond the context (nothing is generated)."""
    if not 0 < len(inputs) <= MAX_EMBED_INPUTS:
        raise InvalidRequest(f"give between 1 and {MAX_EMBED_INPUTS} inputs, got {len(inputs)}")
    out = [list(tokenizer.encode(text)) for text in inputs]
    for i, ids in enumerate(out):
        if not ids:
            raise InvalidRequest(f"input {i} is empty")
        if len(ids) > context_length:
            raise PromptTooLong(
                f"input {i} has {len(ids)} tokens, beyond the context length of {context_length}"
            )
    return out


def check_prompt_length(n: int, context_length: int) -> None:
    """The prompt must be there and leave room for at least one generated token."""
    if n == 0:
        raise InvalidRequest("the prompt is empty")
    if n + 1 > context_length:
        raise PromptTooLong(
            f"the prompt has {n} tokens; with one to generate that exceeds the context "
            f"length of {context_length}"
        )


def available_memory_bytes() -> int:
    """System memory available now, as the hardware module reads it."""
    return hardware.memory().available
