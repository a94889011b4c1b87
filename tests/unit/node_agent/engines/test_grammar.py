"""The one grammar both engines enforce: each kind compiles in llguidance and accepts exactly
what it should, fed token by token through a real byte-level BPE tokenizer."""

from __future__ import annotations

import functools
import json

import pytest
from llguidance import LLMatcher, LLTokenizer

from node_agent.engines.grammar import (
    HERMES,
    GrammarUnsupported,
    forced_tools,
    grammar_for,
    markup_for,
)
from node_agent.types import (
    ChatMessage,
    Constraint,
    ConstraintKind,
    GenerateRequest,
    Tool,
    ToolChoice,
    ToolChoiceMode,
)

WEATHER = Tool(
    name="get_weather",
    parameters=json.dumps(
        {
            "type": "object",
            "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
            "required": ["city"],
            "additionalProperties": False,
        }
    ),
    strict=True,
)
TOKENS = markup_for("hermes", {"<tool_call>": 288, "</tool_call>": 289})
TIME = Tool(name="get_time", parameters='{"type": "object", "properties": {}}')
REQUIRED = ToolChoice(ToolChoiceMode.REQUIRED)
NAMED = ToolChoiceMode.NAMED


@functools.cache
def tokenizer(markers: bool = True) -> LLTokenizer:
    """A small byte-level BPE; with `markers`, the call markers are added tokens, as in Qwen's."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=["<|endoftext|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(['{"name": "get_weather", "arguments": {"city": "Oslo"}}'] * 5, trainer)
    if markers:
        tok.add_tokens(["<tool_call>", "</tool_call>"])
    return LLTokenizer(tok.to_str(), eos_token=0)


def accepts(grammar: str, text: str, markers: bool = True) -> bool:
    """Whether the grammar allows `text` as a whole output (then the end of the turn)."""
    tok = tokenizer(markers)
    assert LLMatcher.validate_grammar(grammar, tok) == ""
    matcher = LLMatcher(tok, grammar)
    ok = matcher.consume_tokens(tok.tokenize_str(text))
    return ok and not matcher.is_error() and matcher.is_accepting()


def request(**kw: object) -> GenerateRequest:
    return GenerateRequest(
        request_id="r",
        model="demo",
        messages=(ChatMessage("user", "hi"),),
        **kw,  # type: ignore[arg-type]
    )


def call(name: str, args: dict[str, object]) -> str:
    return f"<tool_call>\n{json.dumps({'name': name, 'arguments': args})}\n</tool_call>"


def test_a_json_schema_admits_only_valid_documents() -> None:
    schema = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}
    g = grammar_for(
        request(constraint=Constraint(ConstraintKind.JSON_SCHEMA, json.dumps(schema))), None
    )
    assert g is not None
    assert accepts(g, '{"n": 3}')
    assert not accepts(g, '{"n": "three"}') and not accepts(g, "n = 3")


def test_json_object_lark_and_regex() -> None:
    obj = grammar_for(request(constraint=Constraint(ConstraintKind.JSON_OBJECT)), None)
    assert obj is not None and accepts(obj, '{"a": [1, 2]}') and not accepts(obj, "[1, 2]")
    lark = grammar_for(
        request(constraint=Constraint(ConstraintKind.LARK, 'start: "yes" | "no"')), None
    )
    assert lark is not None and accepts(lark, "yes") and not accepts(lark, "maybe")
    regex = grammar_for(request(constraint=Constraint(ConstraintKind.REGEX, "[0-9]{3}/x")), None)
    assert regex is not None and accepts(regex, "123/x") and not accepts(regex, "12/x")


def test_a_named_tool_is_a_call_of_that_tool_with_valid_arguments() -> None:
    r = request(tools=(WEATHER, TIME), tool_choice=ToolChoice(ToolChoiceMode.NAMED, "get_weather"))
    assert forced_tools(r) == (WEATHER,)
    g = grammar_for(r, TOKENS)
    assert g is not None
    assert accepts(g, call("get_weather", {"city": "Oslo"}))
    assert accepts(
        g, call("get_weather", {"city": "Oslo"}) + "\n" + call("get_weather", {"city": "Rome"})
    )
    assert not accepts(g, call("get_time", {}))
    assert not accepts(g, call("get_weather", {"city": 3}))
    assert not accepts(g, call("get_weather", {"city": "Oslo", "extra": 1}))
    assert not accepts(g, "It is sunny.")


def test_required_is_any_tool_and_one_call_without_parallel_calls() -> None:
    r = request(
        tools=(WEATHER, TIME),
        tool_choice=ToolChoice(ToolChoiceMode.REQUIRED),
        parallel_tool_calls=False,
    )
    g = grammar_for(r, TOKENS)
    assert g is not None
    assert accepts(g, call("get_time", {})) and accepts(g, call("get_weather", {"city": "X"}))
    assert not accepts(g, call("get_time", {}) + "\n" + call("get_time", {}))
    assert not accepts(g, call("delete_everything", {}))


def test_strict_tools_in_auto_allow_text_and_hold_calls_to_their_schema() -> None:
    g = grammar_for(request(tools=(WEATHER,)), TOKENS)
    assert g is not None
    assert accepts(g, "No call needed.")
    assert accepts(g, "Let me look.\n" + call("get_weather", {"city": "Oslo", "days": 2}))
    assert not accepts(g, "Let me look.\n" + call("get_weather", {"city": "Oslo", "days": "2"}))


def test_free_requests_have_no_grammar_and_unknown_markup_is_refused() -> None:
    assert grammar_for(request(), TOKENS) is None
    assert grammar_for(request(tools=(TIME,)), None) is None  # auto, not strict: parse only
    with pytest.raises(GrammarUnsupported):
        grammar_for(request(tools=(TIME,), tool_choice=ToolChoice(ToolChoiceMode.REQUIRED)), None)


def test_markers_that_are_not_tokens_are_matched_as_text() -> None:
    assert markup_for("json_tools", {}) == HERMES and not HERMES.tokens
    assert markup_for("mistral", {"[TOOL_CALLS]": 5}) is None
    named = request(tools=(WEATHER,), tool_choice=ToolChoice(ToolChoiceMode.NAMED, "get_weather"))
    g = grammar_for(named, HERMES)
    assert g is not None and accepts(g, call("get_weather", {"city": "Oslo"}), markers=False)
    auto = grammar_for(request(tools=(WEATHER,)), HERMES)
    assert auto is not None
    assert accepts(auto, "Sure.\n" + call("get_weather", {"city": "Oslo"}), markers=False)
    assert not accepts(auto, "Sure.\n" + call("get_weather", {"town": "Oslo"}), markers=False)


# The grammar Codex gives its `apply_patch` tool (a custom tool of the Responses API).
APPLY_PATCH = r"""start: begin_patch hunk+ end_patch
begin_patch: "*** Begin Patch" LF
end_patch: "*** End Patch" LF?
hunk: add_hunk | delete_hunk | update_hunk
add_hunk: "*** Add File: " filename LF add_line+
delete_hunk: "*** Delete File: " filename LF
update_hunk: "*** Update File: " filename LF change_move? change?
filename: /(.+)/
add_line: "+" /(.*)/ LF -> line
change_move: "*** Move to: " filename LF
change: (change_context | change_line)+ eof_line?
change_context: ("@@" | "@@ " /(.+)/) LF
change_line: ("+" | "-" | " ") /(.*)/ LF
eof_line: "*** End of File" LF
%import common.LF
"""
PATCH = Tool(name="apply_patch", grammar=Constraint(ConstraintKind.LARK, APPLY_PATCH))
CODE = Tool(name="code", grammar=Constraint(ConstraintKind.REGEX, "[a-z]{3}/[0-9]{2}"))
GOOD = (
    "*** Begin Patch\n*** Update File: a.py\n@@ def f():\n-    return 1\n+    return 2\n"
    "*** End Patch\n"
)
BAD = "*** Begin Patch\nreturn 2\n*** End Patch\n"


def freeform(name: str, raw: str) -> str:
    return f'<tool_call>\n{{"name": "{name}"}}\n{raw}</tool_call>'


def test_a_forced_freeform_call_holds_its_raw_input_to_the_grammar() -> None:
    named = ToolChoice(NAMED, "apply_patch")
    g = grammar_for(request(tools=(PATCH, WEATHER), tool_choice=named), TOKENS)
    assert g is not None and accepts(g, freeform("apply_patch", GOOD))
    assert not accepts(g, freeform("apply_patch", BAD))
    assert not accepts(g, call("apply_patch", {"input": GOOD}))  # not as a JSON argument
    regex = grammar_for(request(tools=(CODE,), tool_choice=ToolChoice(NAMED, "code")), TOKENS)
    assert regex is not None and accepts(regex, freeform("code", "abc/12"))
    assert not accepts(regex, freeform("code", "abc/1x"))


def test_required_offers_freeform_and_function_calls_side_by_side() -> None:
    g = grammar_for(request(tools=(PATCH, WEATHER, TIME, CODE), tool_choice=REQUIRED), TOKENS)
    assert g is not None
    assert accepts(g, freeform("apply_patch", GOOD)) and accepts(g, freeform("code", "xyz/00"))
    assert accepts(g, call("get_weather", {"city": "Oslo"})) and accepts(g, call("get_time", {}))
    assert not accepts(g, call("get_weather", {"city": 3}))
    assert accepts(g, freeform("code", "abc/12") + "\n" + call("get_time", {}))


def test_in_auto_text_is_free_and_an_opened_freeform_call_is_held() -> None:
    for markers, markup in ((True, TOKENS), (False, HERMES)):
        g = grammar_for(request(tools=(PATCH, WEATHER, TIME)), markup)
        assert g is not None and accepts(g, "No edit needed.", markers)
        assert accepts(g, "Editing.\n" + freeform("apply_patch", GOOD), markers)
        assert not accepts(g, "Editing.\n" + freeform("apply_patch", BAD), markers)
        assert accepts(g, "Time?\n" + call("get_time", {"tz": "UTC"}), markers)  # loose: any object


def test_without_known_markup_a_freeform_grammar_is_only_described() -> None:
    assert grammar_for(request(tools=(PATCH,)), None) is None
    with pytest.raises(GrammarUnsupported):
        grammar_for(request(tools=(PATCH,), tool_choice=REQUIRED), None)


def test_a_freeform_grammar_that_does_not_compile_fails_at_compile() -> None:
    broken = Tool(name="p", grammar=Constraint(ConstraintKind.LARK, "start: missing_rule\n"))
    g = grammar_for(request(tools=(broken,), tool_choice=REQUIRED), TOKENS)
    assert g is not None and LLMatcher.validate_grammar(g, tokenizer()) != ""
