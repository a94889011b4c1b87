"""A client's Lark grammar as rules inside a larger grammar: its names prefixed, its imports apart.

A custom tool (the Responses API's freeform tools; Codex's `apply_patch`) gives the Lark grammar
its input must match. engines/grammar.py places that input inside a tool call, so the client's
rules become rules of the call's grammar: every name the client defines gets a prefix of its
own (`ct0_start`, `CT0_NAME`, so two tools' rules cannot clash with each other or with the
call's), and `%import common.X` lines are kept apart, to be written once. llguidance takes one
Lark text on both engines (vLLM accepts no list of grammars), so nesting is done in the text.

Pure: no I/O. It reads Lark's lexical structure (strings, regexes, comments, `{...}` blocks) only
as far as needed to leave them untouched; llguidance checks the rest when it compiles.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# One lexical piece of a Lark grammar; a piece that is none of these is passed on as it is.
_PIECE = re.compile(
    r"""
      (?P<comment>//[^\n]*|\#[^\n]*)
    | (?P<string>"(?:[^"\\\n]|\\.)*"i?)
    | (?P<regex>/(?!/)(?:[^/\\\n]|\\.)+/[imslux]*)
    | (?P<special><[^<>\s]+>)
    | (?P<arrow>->)
    | (?P<directive>%[a-z_]+)
    | (?P<name>[A-Za-z_](?:[A-Za-z0-9_]|-(?!>))*)
    | (?P<brace>\{)
    | (?P<other>\s+|.)
    """,
    re.VERBOSE | re.DOTALL,
)
# A definition's head: `name:`, `?name:`, `name[lazy]:`, `NAME.2:`.
_DEFINITION = re.compile(
    r"^[ \t]*[?!]?([A-Za-z_][A-Za-z0-9_-]*)\s*(\[[^\]\n]*\])?\s*(\.-?\d+)?\s*:"
)
_IMPORT = re.compile(r"^[ \t]*%import\b[^\n]*", re.MULTILINE)
_COMMON = re.compile(r"%import\s+common(?:\.[A-Za-z_]\w*|\s*\([\w\s,]*\))(?:\s*->\s*\w+)?\s*$")
_BLANK = re.compile(r"[^\n]")
ENTRY = "start"


@dataclass(frozen=True)
class Embedded:
    """A client grammar made ready to nest: its rules renamed, its `%import` lines apart."""

    rules: str  # the grammar's definitions, every defined name prefixed
    imports: tuple[str, ...]  # `%import common...` lines, as written
    entry: str  # the prefixed name of its `start` rule


def embed_lark(grammar: str, index: int) -> Embedded:
    """`grammar` with every name it defines prefixed for nesting as tool `index`'s input.

    ValueError for a grammar with no `start` rule or an import other than `%import common`.
    """
    imports = tuple(m.group(0).strip() for m in _IMPORT.finditer(grammar))
    for line in imports:
        if not _COMMON.match(line):
            raise ValueError(f"only '%import common' may be used in a tool's grammar: {line!r}")
    body = _IMPORT.sub("", grammar)
    defined = {m.group(1) for line in _lines(body) if (m := _DEFINITION.match(line))}
    if ENTRY not in defined:
        raise ValueError("a tool's Lark grammar needs a 'start' rule")
    renamed = "".join(_renamed(piece, defined, index) for piece in _pieces(body))
    return Embedded(rules=renamed, imports=imports, entry=prefixed(ENTRY, index))


def embed_regex(regex: str, index: int) -> Embedded:
    """A regex the whole input must match, as a rule named like an embedded grammar's start."""
    entry, body = prefixed(ENTRY, index), regex.replace("/", "\\/")
    return Embedded(rules=f"{entry}: /{body}/\n", imports=(), entry=entry)


def prefixed(name: str, index: int) -> str:
    """A client's name in the nesting grammar: terminals stay upper case, rules lower case."""
    prefix = f"ct{index}_"
    return prefix.upper() + name if name.lstrip("_")[:1].isupper() else prefix + name


def _renamed(piece: tuple[str, str], defined: set[str], index: int) -> str:
    kind, text = piece
    return prefixed(text, index) if kind == "name" and text in defined else text


def _pieces(text: str) -> list[tuple[str, str]]:
    """The grammar's pieces as (kind, text); a `{...}` block (inline JSON) is one piece."""
    out: list[tuple[str, str]] = []
    at = 0
    while at < len(text):
        match = _PIECE.match(text, at)
        assert match is not None and match.lastgroup is not None  # `other` matches any character
        if match.lastgroup == "brace":
            end = _block_end(text, at)
            out.append(("block", text[at:end]))
            at = end
            continue
        out.append((match.lastgroup, match.group(0)))
        at = match.end()
    return out


def _block_end(text: str, start: int) -> int:
    """The index just past the `}` closing the block opened at `start` (JSON strings skipped)."""
    depth, at, quoted = 0, start, False
    while at < len(text):
        char = text[at]
        if quoted:
            if char == "\\":
                at += 1
            elif char == '"':
                quoted = False
        elif char == '"':
            quoted = True
        elif char == "{":
            depth += 1
        elif char == "}":
            depth -= 1
            if depth == 0:
                return at + 1
        at += 1
    raise ValueError("a '{' in the grammar is never closed")


def _lines(text: str) -> list[str]:
    """The grammar's lines with strings, regexes, comments and blocks blanked out, so that a
    colon inside one is not taken for a definition."""
    masked = "".join(
        text if kind in ("name", "other", "arrow", "directive") else _BLANK.sub(" ", text)
        for kind, text in _pieces(text)
    )
    return masked.split("\n")
