"""What every engine checks the same way: request values, prompt rendering and length, memory.

Engines differ in how they run a model, not in what a valid request is: one set of rules here
means a request refused by one node is refused by every node, with the same error type.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from node_agent import hardware
from node_agent.errors import InvalidRequest, PromptTooLong
from node_agent.types import GenerateRequest

MAX_STOP_STRINGS = 4


def check_request(request: GenerateRequest, context_length: int) -> None:
    """Raise InvalidRequest unless the prompt is present and the sampling values are in range."""
    if request.text is not None and request.messages is not None:
        raise InvalidRequest("give either text or messages, not both")
    if not request.text and not request.messages:
        raise InvalidRequest("the prompt is empty")
    s = request.sampling
    if not 1 <= s.max_tokens <= context_length:
        raise InvalidRequest(
            f"max_tokens must be between 1 and the context length {context_length}, "
            f"got {s.max_tokens}"
        )
    if not 0 <= s.temperature <= 2:
        raise InvalidRequest(f"temperature must be between 0 and 2, got {s.temperature}")
    if not 0 < s.top_p <= 1:
        raise InvalidRequest(f"top_p must be in (0, 1], got {s.top_p}")
    if len(s.stop) > MAX_STOP_STRINGS or not all(s.stop):
        raise InvalidRequest(f"at most {MAX_STOP_STRINGS} stop strings, none of them empty")


def render_prompt(tokenizer: Any, request: GenerateRequest) -> list[int]:
    """Token ids of the prompt: raw text as is, or messages through the chat template."""
    if request.text is not None:
        return list(tokenizer.encode(request.text))
    messages = [{"role": m.role, "content": m.content} for m in request.messages or ()]
    try:
        ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True)
    except Exception as exc:  # jinja raises whatever the template author chose
        raise InvalidRequest(f"the chat template rejected the messages: {exc}") from exc
    # transformers 5 answers with a BatchEncoding; wrappers (mlx-lm's) with a plain list.
    return list(ids["input_ids"] if isinstance(ids, Mapping) else ids)


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
