"""What a generation must match, as one Lark grammar in llguidance's dialect, for both engines.

A client's JSON schema, "any JSON object", Lark grammar or regex, and the tool calls a request
forces (`tool_choice` required or named) or makes strict all become one grammar. The MLX
engine compiles it with llguidance for each request's row of the batch; vLLM takes the same
text as a `guidance` structured output. A forced call is written in the model's own markup
(ToolMarkup), so the engine's tool parser reads it as it reads any call. Pure: no I/O.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from node_agent.engines.lark_embed import Embedded, embed_lark, embed_regex
from node_agent.types import Constraint, ConstraintKind, GenerateRequest, Tool, ToolChoiceMode

# The one layout a constrained JSON document may take (a client's own "x-guidance" wins).
JSON_LAYOUT = {"whitespace_flexible": False, "item_separator": ", ", "key_separator": ": "}
# A freeform call's first line; its raw input follows (parsing.py reads the same header).
FREEFORM_HEADER = '{{"name": {name}}}\n'
NEWLINE = '"\\n"'  # a newline as a Lark literal
# Free text before a call, as llguidance's own tool-calling grammars write it (lazy: it ends
# at the first trigger).
_TEXT = r"(.|\n)*"


@dataclass(frozen=True)
class ToolMarkup:
    """How a model family writes one tool call: `open`, newline, a JSON object, newline, `close`.

    `tokens`: the markers are single tokens of the vocabulary (added tokens, as in Qwen's), which
    llguidance matches as special tokens; otherwise they are matched as text.
    """

    open: str
    close: str
    tokens: bool = False
    separator: str = "\n"  # between two calls of one turn

    def marker(self, text: str) -> str:
        """A marker as a Lark terminal: the token itself, or its text."""
        return text if self.tokens else _lit(text)


# Hermes / Qwen: <tool_call>\n{"name": ..., "arguments": {...}}\n</tool_call>
HERMES = ToolMarkup("<tool_call>", "</tool_call>")


def markup_for(family: str, vocab: Mapping[str, int]) -> ToolMarkup | None:
    """The markup of a tool-parser family ("json_tools" in mlx-lm, "hermes" in vLLM), with its
    markers as tokens where the vocabulary has them; None for a family we cannot constrain."""
    if family not in ("json_tools", "hermes"):
        return None
    return replace(HERMES, tokens=HERMES.open in vocab and HERMES.close in vocab)


class GrammarUnsupported(ValueError):
    """The request asks for a constraint this model cannot be held to (no known tool markup)."""


def grammar_for(request: GenerateRequest, markup: ToolMarkup | None) -> str | None:
    """The Lark grammar the request's output must match; None when it is free.

    A freeform tool's grammar is held where the markup is known, and otherwise only shown to
    the model in the tool's description (its input is then a JSON string like any argument).
    """
    if request.constraint is not None:
        return constraint_grammar(request.constraint)
    forced = forced_tools(request)
    held = tuple(t for t in request.tools if t.strict or (t.grammar and markup))
    if not forced and not held:
        return None
    if markup is None:
        raise GrammarUnsupported("this model's chat template has no tool-call markup we know")
    if any(t.grammar for t in request.tools):
        return freeform_calls(request, forced, markup)
    if forced:
        return _calls(forced, markup, many=request.parallel_tool_calls)
    return _text_then_calls(request.tools, markup, many=request.parallel_tool_calls)


def forced_tools(request: GenerateRequest) -> tuple[Tool, ...]:
    """The tools one of which the model must call: the named one, every one, or none."""
    choice = request.tool_choice
    if choice.mode is ToolChoiceMode.NAMED:
        return tuple(t for t in request.tools if t.name == choice.name)
    if choice.mode is ToolChoiceMode.REQUIRED:
        return request.tools
    return ()


def constraint_grammar(constraint: Constraint) -> str:
    """A client's output constraint as a Lark grammar."""
    if constraint.kind is ConstraintKind.LARK:
        return constraint.text
    if constraint.kind is ConstraintKind.REGEX:
        return f"start: /{_regex_body(constraint.text)}/\n"
    schema = (
        constraint.text if constraint.kind is ConstraintKind.JSON_SCHEMA else '{"type": "object"}'
    )
    return f"start: {_json(json.loads(schema))}\n"


def call_schema(tools: tuple[Tool, ...]) -> dict[str, Any]:
    """The JSON schema of one call of any of `tools`: its name and its arguments."""
    options = [
        {
            "type": "object",
            "properties": {"name": {"const": t.name}, "arguments": json.loads(t.parameters)},
            "required": ["name", "arguments"],
            "additionalProperties": False,
        }
        for t in tools
    ]
    return options[0] if len(options) == 1 else {"anyOf": options}


def _calls(tools: tuple[Tool, ...], markup: ToolMarkup, *, many: bool) -> str:
    more = f" ({_lit(markup.separator)} call)*" if many else ""
    return f"start: call{more}\ncall: {_call_body(call_schema(tools), markup, opened=False)}\n"


def _call_body(schema: dict[str, Any], markup: ToolMarkup, *, opened: bool) -> str:
    opening = "" if opened else f"{markup.marker(markup.open)} "
    close = markup.marker(markup.close)
    return f'{opening}"\\n" {_json(schema)} "\\n" {close}'


def _text_then_calls(tools: tuple[Tool, ...], markup: ToolMarkup, *, many: bool) -> str:
    """Free text; once the model opens a call, a call that validates (strict tools in auto)."""
    strict = tuple(t for t in tools if t.strict)
    loose = tuple(t for t in tools if not t.strict)
    schema = (
        call_schema(strict) if not loose else {"anyOf": [call_schema(strict), _any_call(loose)]}
    )
    body = _call_body(schema, markup, opened=True)
    if markup.tokens:  # a special token never occurs in free text: no lazy lexeme needed
        rules = f"call: TEXT {markup.marker(markup.open)} {body}\n"
    else:
        rules = f"call: opening {body}\nopening[lazy]: TEXT {_lit(markup.open)}\n"
    return f"start: call{'*' if many else '?'} TEXT\n{rules}TEXT: /{_TEXT}/\n"


def freeform_calls(request: GenerateRequest, forced: tuple[Tool, ...], markup: ToolMarkup) -> str:
    """Calls among tools some of which are freeform: each call is one alternative of its own.

    A function call is written `{"name": "f", "arguments": {...}}`; a freeform one is a header,
    `{"name": "t"}`, a newline, and the input raw up to the closing marker (parsing.py reads it
    back as the argument `input`). Each alternative opens with its whole name as one literal:
    llguidance's lexer is greedy, so a shared opening with a choice after it would not lex.
    """
    tools = forced or request.tools
    embedded = _embedded(tools)
    bodies = " | ".join(_alternative(i, t, embedded, loose=not forced) for i, t in enumerate(tools))
    opened = f"{NEWLINE} body {markup.marker(markup.close)}"
    repeat = "*" if request.parallel_tool_calls else "?"
    if forced:
        more = f" ({_lit(markup.separator)} call)*" if request.parallel_tool_calls else ""
        head = f"start: call{more}\ncall: {markup.marker(markup.open)} {opened}\n"
    elif markup.tokens:
        head = f"start: call{repeat} TEXT\ncall: TEXT {markup.marker(markup.open)} {opened}\n"
    else:
        head = f"start: call{repeat} TEXT\ncall: opening {opened}\n"
        head += f"opening[lazy]: TEXT {_lit(markup.open)}\n"
    text = "" if forced else f"TEXT: /{_TEXT}/\n"
    return f"{head}{text}body: {bodies}\n{_nested(embedded)}"


def _embedded(tools: tuple[Tool, ...]) -> dict[int, Embedded]:
    """Each freeform tool's grammar, renamed for nesting, by the tool's index."""
    out = {}
    for i, tool in enumerate(tools):
        if tool.grammar is not None and tool.grammar.kind is ConstraintKind.REGEX:
            out[i] = embed_regex(tool.grammar.text, i)
        elif tool.grammar is not None:
            out[i] = embed_lark(tool.grammar.text, i)
    return out


def _alternative(i: int, tool: Tool, embedded: dict[int, Embedded], *, loose: bool) -> str:
    """One tool's call: its opening literal, then its arguments or its raw input."""
    name = _compact(tool.name)
    if i in embedded:
        return f"{_lit(FREEFORM_HEADER.format(name=name))} {embedded[i].entry}"
    schema = {"type": "object"} if loose and not tool.strict else json.loads(tool.parameters)
    opening = _lit('{"name": ' + name + ', "arguments": ')
    return f'{opening} {_json(schema)} "}}" {NEWLINE}'


def _nested(embedded: dict[int, Embedded]) -> str:
    """The freeform tools' renamed rules, then their imports, each once."""
    rules = "".join(e.rules.rstrip("\n") + "\n" for e in embedded.values())
    imports = dict.fromkeys(line for e in embedded.values() for line in e.imports)
    return rules + "".join(f"{line}\n" for line in imports)


def _any_call(tools: tuple[Tool, ...]) -> dict[str, Any]:
    names = [t.name for t in tools]
    return {
        "type": "object",
        "properties": {"name": {"enum": names}, "arguments": {"type": "object"}},
        "required": ["name", "arguments"],
    }


def _lit(text: str) -> str:
    return json.dumps(text)  # a JSON string is a valid Lark string literal


def _json(schema: Any) -> str:
    """A schema as a %json rule, written as json.dumps writes (and templates render) JSON: a
    model free to put whitespace anywhere may fill its whole budget with newlines."""
    if isinstance(schema, dict):
        schema = {"x-guidance": JSON_LAYOUT, **schema}
    return f"%json {_compact(schema)}"


def _compact(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))


def _regex_body(regex: str) -> str:
    return regex.replace("/", "\\/")
