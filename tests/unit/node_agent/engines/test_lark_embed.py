"""A client's Lark grammar nested in a tool call's grammar: names prefixed, nothing else touched."""

from __future__ import annotations

import pytest

from node_agent.engines.lark_embed import embed_lark, embed_regex, prefixed


def test_defined_names_are_prefixed_and_literals_regexes_and_comments_are_not() -> None:
    grammar = (
        "// start: a comment is not a rule\n"
        "start: greeting NAME+ -> hello  # greeting: no\n"
        '?greeting: "start:" | /greeting|NAME/i\n'
        "NAME.2: /[a-z]+/\n"
        'lazy_rule[lazy, stop="NAME"]: /x+/\n'
        "%ignore NAME\n"
    )
    out = embed_lark(grammar, 3)
    assert out.entry == "ct3_start" and out.imports == ()
    assert "ct3_start: ct3_greeting CT3_NAME+ -> hello  # greeting: no" in out.rules
    assert '?ct3_greeting: "start:" | /greeting|NAME/i' in out.rules
    assert "CT3_NAME.2: /[a-z]+/" in out.rules
    assert 'ct3_lazy_rule[lazy, stop="NAME"]: /x+/' in out.rules
    assert "%ignore CT3_NAME" in out.rules and "// start: a comment" in out.rules


def test_common_imports_are_kept_apart_and_others_refused() -> None:
    out = embed_lark('start: "a" LF\n%import common.LF\n%import common (WS, DIGIT)\n', 0)
    assert out.imports == ("%import common.LF", "%import common (WS, DIGIT)")
    assert "%import" not in out.rules and 'ct0_start: "a" LF' in out.rules
    with pytest.raises(ValueError, match="only '%import common'"):
        embed_lark('start: "a"\n%import mylib.X\n', 0)


def test_a_grammar_needs_a_start_rule_and_closed_blocks() -> None:
    with pytest.raises(ValueError, match="'start' rule"):
        embed_lark('begin: "a"\n', 0)
    with pytest.raises(ValueError, match="never closed"):
        embed_lark('start: %json { "type": "object"\n', 0)


def test_inline_json_is_one_piece() -> None:
    out = embed_lark('start: %json { "properties": { "start": {"const": "}"} } }\n', 1)
    assert out.rules == 'ct1_start: %json { "properties": { "start": {"const": "}"} } }\n'


def test_a_regex_is_the_whole_input_and_names_keep_their_case() -> None:
    assert embed_regex("a/b+", 2).rules == "ct2_start: /a\\/b+/\n"
    assert prefixed("_EXP", 0) == "CT0__EXP" and prefixed("_item", 0) == "ct0__item"
