"""A request's grammar as vLLM's structured output, checked against the demo model's vocabulary."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("vllm")  # the vLLM engine's own module; skipped where vLLM is not installed

from transformers import AutoTokenizer

from node_agent.engines.parsing import Dialect, dialect_for
from node_agent.engines.vllm_grammar import Grammars
from node_agent.errors import InvalidRequest
from node_agent.types import (
    ChatMessage,
    Constraint,
    ConstraintKind,
    GenerateRequest,
    Tool,
    ToolChoice,
    ToolChoiceMode,
)

HERMES = dialect_for("json_tools", think=("<think>", "</think>"))
WEATHER = Tool(name="get_weather", parameters='{"type": "object"}')


@pytest.fixture(scope="module")
def tokenizer(demo_model_dir: Path) -> Any:
    """The demo model's tokenizer, whose tool-call tags are tokens of their own."""
    return AutoTokenizer.from_pretrained(demo_model_dir)


def request(**kw: Any) -> GenerateRequest:
    """A chat request."""
    messages = (ChatMessage("user", "hi"),)
    return GenerateRequest(request_id="g", model="demo", messages=messages, **kw)


def test_a_forced_call_is_a_grammar_on_the_models_tag_tokens(tokenizer: Any) -> None:
    grammars = Grammars(tokenizer, width=4096, dialect=HERMES)
    assert grammars.markup is not None and grammars.markup.tokens
    forced = request(tools=(WEATHER,), tool_choice=ToolChoice(ToolChoiceMode.REQUIRED))
    grammar = grammars.grammar(forced)
    assert grammar is not None and "<tool_call>" in grammar
    assert grammars.check(grammar).grammar == grammar


def test_a_free_request_has_no_grammar(tokenizer: Any) -> None:
    grammars = Grammars(tokenizer, width=4096, dialect=HERMES)
    assert grammars.grammar(request(tools=(WEATHER,))) is None


def test_a_schema_needs_no_tool_markup(tokenizer: Any) -> None:
    grammars = Grammars(tokenizer, width=4096, dialect=Dialect())
    schema = Constraint(ConstraintKind.JSON_SCHEMA, json.dumps({"type": "object"}))
    grammar = grammars.grammar(request(constraint=schema))
    assert grammar is not None and grammars.check(grammar).grammar == grammar
    forced = request(tools=(WEATHER,), tool_choice=ToolChoice(ToolChoiceMode.REQUIRED))
    with pytest.raises(InvalidRequest, match="tool-call markup"):
        grammars.grammar(forced)


@pytest.mark.parametrize(
    ("grammar", "needle"),
    [
        ("start: nowhere\n", "unknown name"),
        ('start: <|no_such_token|> "x"\n', "unknown special token"),
    ],
)
def test_a_grammar_that_does_not_compile_is_refused(
    tokenizer: Any, grammar: str, needle: str
) -> None:
    grammars = Grammars(tokenizer, width=4096, dialect=HERMES)
    with pytest.raises(InvalidRequest, match=needle) as caught:
        grammars.check(grammar)
    assert len(str(caught.value)) < 400  # llguidance lists the whole special vocabulary


def test_token_bytes_are_the_vocabularys(tokenizer: Any) -> None:
    grammars = Grammars(tokenizer, width=4096, dialect=HERMES)
    (tag,) = tokenizer.encode("<tool_call>", add_special_tokens=False)
    assert grammars.token_bytes(tag) == b"<tool_call>"
