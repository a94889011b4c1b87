"""The output parser: reasoning, answer and tool calls out of streamed text fixtures."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from transformers import AutoTokenizer

from node_agent.engines.parsing import (
    Dialect,
    OutputParser,
    capabilities,
    dialect_for,
    dialect_of,
    normalize_tool_parser,
    starts_in_reasoning,
    tool_parser_families,
    tool_parser_option,
)
from node_agent.errors import InvalidRequest
from node_agent.types import (
    REASONING,
    TOOLS,
    Constraint,
    ConstraintKind,
    Delta,
    ReasoningDelta,
    TokenEvent,
    Tool,
    ToolCallDelta,
)

HERMES = dialect_for("json_tools", think=("<think>", "</think>"))
CALL = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Oslo"}}\n</tool_call>'
WEATHER = Tool(name="get_weather", parameters='{"type": "object"}')


def run(text: str, *, pieces: int = 1, reasoning: bool = False, **kw: object) -> list[TokenEvent]:
    """Feed `text` in pieces of `pieces` characters (one token each), then finish."""
    parser = OutputParser(HERMES, reasoning=reasoning, **kw)  # type: ignore[arg-type]
    out: list[TokenEvent] = []
    for i in range(0, len(text), pieces):
        out += parser.feed(text[i : i + pieces])
    return out + parser.finish()


def answer(events: list[TokenEvent]) -> str:
    return "".join(e.text for e in events if isinstance(e, Delta))


def reasoning(events: list[TokenEvent]) -> str:
    return "".join(e.text for e in events if isinstance(e, ReasoningDelta))


def calls(events: list[TokenEvent]) -> list[ToolCallDelta]:
    return [e for e in events if isinstance(e, ToolCallDelta)]


def test_plain_text_passes_through_with_every_token_counted() -> None:
    for size in (1, 3, 100):
        events = run("Hello, <b>world</b> <to", pieces=size)
        assert answer(events) == "Hello, <b>world</b> <to"
        assert sum(e.tokens for e in events) == -(-len("Hello, <b>world</b> <to") // size)


def test_a_call_streams_as_id_and_name_then_arguments_then_done() -> None:
    for size in (1, 7, 1000):
        events = run("Let me look. " + CALL, pieces=size)
        assert answer(events) == "Let me look. "
        first, args, done = calls(events)
        assert (first.index, first.name, first.arguments, first.done) == (
            0,
            "get_weather",
            "",
            False,
        )
        assert re.fullmatch(r"call_[0-9a-f]{24}", first.id)
        assert json.loads(args.arguments) == {"city": "Oslo"} and not args.id
        assert done.done and done.index == 0


def test_two_calls_get_two_indexes_and_the_newline_between_them_is_dropped() -> None:
    parser = OutputParser(HERMES, tools=(WEATHER,))
    events = parser.feed(CALL + "\n" + CALL.replace("Oslo", "Bergen")) + parser.finish()
    assert [c.index for c in calls(events) if c.done] == [0, 1]
    assert answer(events) == ""
    assert parser.made_calls


def test_a_freeform_call_is_its_header_then_its_raw_input() -> None:
    patch = Tool(name="apply_patch", grammar=Constraint(ConstraintKind.LARK, "start: /.+/"))
    raw = '*** Begin Patch\n+say "hi"\n*** End Patch\n'
    for size in (1, 5, 1000):
        events = run(
            '<tool_call>\n{"name": "apply_patch"}\n' + raw + "</tool_call>" + CALL,
            pieces=size,
            tools=(patch, WEATHER),
        )
        first, args, _, second, *_ = calls(events)
        assert first.name == "apply_patch" and json.loads(args.arguments) == {"input": raw}
        assert second.name == "get_weather"
    # A header naming a tool that is not freeform is not one: the text is passed on.
    text = '<tool_call>\n{"name": "get_weather"}\nraw</tool_call>'
    assert answer(run(text, tools=(patch, WEATHER))) == text


def test_reasoning_is_split_from_the_answer() -> None:
    events = run("<think>Cold up north.</think>\n\nTake a coat.", pieces=2)
    assert reasoning(events) == "Cold up north."
    assert answer(events) == "Take a coat."


def test_a_prompt_that_opens_thinking_starts_in_reasoning() -> None:
    assert starts_in_reasoning(HERMES, "<|im_start|>assistant\n<think>\n")
    assert not starts_in_reasoning(HERMES, "<think>\n\n</think>\n\n")
    assert not starts_in_reasoning(Dialect(), "<think>")
    parser = OutputParser(HERMES, reasoning=True)
    events = parser.feed("Hmm.", 2) + parser.feed("</think>", 1) + parser.feed("Yes.", 1)
    events += parser.finish()
    assert (reasoning(events), answer(events)) == ("Hmm.", "Yes.")
    assert parser.reasoning_tokens == 3


def test_a_call_may_follow_reasoning() -> None:
    events = run("<think>I need the weather.</think>" + CALL, pieces=5)
    assert reasoning(events) == "I need the weather."
    assert [c.name for c in calls(events) if c.name] == ["get_weather"]


def test_a_call_that_does_not_parse_comes_out_as_text() -> None:
    events = run("<tool_call>\n{not json}\n</tool_call> ok")
    assert not calls(events)
    assert answer(events) == "<tool_call>\n{not json}\n</tool_call>ok"


def test_an_unclosed_call_is_parsed_at_the_end() -> None:
    events = run(CALL.removesuffix("</tool_call>"), pieces=4)
    assert json.loads(calls(events)[1].arguments) == {"city": "Oslo"}


def test_tokens_that_release_nothing_are_still_counted() -> None:
    parser = OutputParser(HERMES)
    events = parser.feed("<th", 1) + parser.feed("ink></think>", 1) + parser.feed("\n", 1)
    events += parser.finish()
    assert events == [Delta("", 3)]


def test_a_model_without_markers_is_all_answer() -> None:
    parser = OutputParser(Dialect())
    events = parser.feed("<think>" + CALL, 3) + parser.finish()
    assert answer(events) == "<think>" + CALL
    assert sum(e.tokens for e in events) == 3


def test_any_family_parser_plugs_in() -> None:
    def parse(text: str, tools: object) -> dict[str, object]:
        name, _, arg = text.partition(":")
        return {"name": name, "arguments": {"q": arg}}

    dialect = Dialect(calls=("[[", "]]"), parse_call=parse, family="toy")
    parser = OutputParser(dialect)
    events = parser.feed("x [[search:cats]] y", 5) + parser.finish()
    assert [c.name for c in calls(events) if c.name] == ["search"]
    assert answer(events) == "x y"


@pytest.fixture(scope="module")
def tokenizer(demo_model_dir: Path) -> Any:
    """The demo model's tokenizer: Hermes-style calls, <think> markers."""
    return AutoTokenizer.from_pretrained(demo_model_dir)


def test_the_tool_parser_families_are_mlx_lms_modules() -> None:
    families = tool_parser_families()
    assert {"json_tools", "qwen3_coder", "mistral"} <= set(families)
    assert "__init__" not in families and list(families) == sorted(families)


def test_a_tool_parser_override_picks_the_family(tokenizer: Any) -> None:
    assert dialect_of(tokenizer).family == "json_tools"  # inferred from the chat template
    coder = dialect_of(tokenizer, tool_parser="qwen3_coder")
    assert coder.family == "qwen3_coder" and coder.calls == ("<tool_call>", "</tool_call>")
    assert dialect_of(tokenizer, tool_parser="hermes").family == "json_tools"
    assert coder.think == ("<think>", "</think>")


def test_none_parses_no_calls_and_takes_tools_away(tokenizer: Any) -> None:
    plain = dialect_of(tokenizer, tool_parser="none")
    assert plain.parse_call is None and plain.think == ("<think>", "</think>")
    assert capabilities(tokenizer, plain) == {REASONING}
    assert capabilities(tokenizer, dialect_of(tokenizer)) == {REASONING, TOOLS}


def test_an_unknown_tool_parser_is_refused_naming_the_known_ones() -> None:
    assert normalize_tool_parser(" Hermes ") == "json_tools"
    with pytest.raises(ValueError, match=r"none, .*hermes, json_tools"):
        normalize_tool_parser("toolish")
    with pytest.raises(InvalidRequest, match="qwen3_coder"):
        tool_parser_option({"tool_parser": "toolish"})
    assert tool_parser_option({"tool_parser": "none", "max_batch": "4"}) == (
        "none",
        {"max_batch": "4"},
    )
