"""Reasoning and tool calls out of generated text, the same way on both engines.

The model's chat template decides how it marks reasoning (`<think>…</think>`) and tool calls
(`<tool_call>…</tool_call>`); mlx-lm knows both per model family, and its `tool_parsers` turn a
call's text into a name and arguments. This module wraps that knowledge behind one small,
engine-agnostic interface (it uses mlx-lm's pure-Python parsers, never MLX arrays; importing
mlx_lm loads mlx, whose CPU build every node installs with the `mlx` extra):

    dialect = dialect_of(tokenizer)        # once per loaded model (mlx-lm wrapper or HF tokenizer)
    dialect_of(tokenizer, tool_parser="qwen3_coder")  # a deployment's override ("none": no calls)
    parser = OutputParser(dialect, tools=request.tools,
                          reasoning=starts_in_reasoning(dialect, prompt_tail_text))
    for text, n in pieces:                 # decoded text, special tokens kept; n tokens it covers
        events.extend(parser.feed(text, n))
    events.extend(parser.finish())         # at the end, whatever the reason
    parser.made_calls; parser.reasoning_tokens
    capabilities(tokenizer, dialect)       # TOOLS and REASONING, for ModelInfo.capabilities

`feed` and `finish` return Delta (answer text), ReasoningDelta and ToolCallDelta events in
order; their `tokens` add up to the tokens fed. A call streams as ToolCallDelta(i, id, name),
ToolCallDelta(i, arguments=<JSON object text>), ToolCallDelta(i, done=True). The caller adds the
prompt counts to the first event, logprobs to Deltas, and applies stop strings to Delta text.
A call whose text does not parse is passed on as answer text, markers and all.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import importlib.util
import json
import pkgutil
import secrets
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from node_agent.errors import InvalidRequest
from node_agent.types import REASONING as REASONING_CAPABILITY
from node_agent.types import TOOLS, Delta, ReasoningDelta, TokenEvent, Tool, ToolCallDelta

ParseCall = Callable[[str, Any], Any]  # mlx-lm's parse_tool_call(text, tools) -> dict | [dict]
NORMAL, REASONING, CALL = "normal", "reasoning", "call"
NO_TOOL_PARSER = "none"  # a deployment's choice: parse no tool calls (the model gets no TOOLS)
TOOL_PARSER_ALIASES = {"hermes": "json_tools"}  # vLLM's names for mlx-lm's families


@dataclass(frozen=True)
class Dialect:
    """How one model marks reasoning and tool calls, and how its calls are parsed."""

    think: tuple[str, str] | None = None  # start and end markers
    calls: tuple[str, str] | None = None
    parse_call: ParseCall | None = None
    family: str = ""  # mlx-lm's tool-parser module name ("json_tools", "qwen3_coder", ...)


def dialect_of(tokenizer: Any, tool_parser: str = "") -> Dialect:
    """A model's dialect from its tokenizer: mlx-lm's TokenizerWrapper or a Hugging Face one.

    The family is `tool_parser` when given (a family, an alias, or "none" for no calls), else
    tokenizer_config's `tool_parser_type`, else the chat template's, inferred as mlx-lm infers
    it; the think markers come from the vocabulary. ValueError for an unknown `tool_parser`.
    """
    from mlx_lm import tokenizer_utils  # the inference rules live there, as private helpers

    chosen = normalize_tool_parser(tool_parser)
    wrapped = isinstance(tokenizer, tokenizer_utils.TokenizerWrapper)
    hf = tokenizer._tokenizer if wrapped else tokenizer
    infer: Any = tokenizer_utils  # untyped
    family = chosen or hf.init_kwargs.get("tool_parser_type") or infer._infer_tool_parser(hf)
    start, end = infer._infer_thinking(hf)[:2]
    think = (start, end) if start and end else None
    return dialect_for(None if family == NO_TOOL_PARSER else family, think=think)


@functools.cache
def tool_parser_families() -> tuple[str, ...]:
    """mlx-lm's tool-parser families, its `tool_parsers` modules by name; () without mlx-lm.

    Found on disk, not imported: importing mlx_lm loads mlx, which the controller does not need.
    """
    spec = importlib.util.find_spec("mlx_lm")
    if spec is None or not spec.submodule_search_locations:
        return ()
    paths = [f"{p}/tool_parsers" for p in spec.submodule_search_locations]
    return tuple(sorted(m.name for m in pkgutil.iter_modules(paths) if not m.name.startswith("_")))


def normalize_tool_parser(name: str) -> str:
    """A tool-parser choice as stored and sent: "" (infer), "none", or an mlx-lm family.

    vLLM's names become mlx-lm's ("hermes" is "json_tools"). ValueError names the known ones
    for any other name; where mlx-lm is not installed the name is kept, for the node to judge.
    """
    name = name.strip().lower()
    name = TOOL_PARSER_ALIASES.get(name, name)
    families = tool_parser_families()
    if name in ("", NO_TOOL_PARSER) or name in families or not families:
        return name
    raise ValueError(f"unknown tool parser {name!r}; known: {', '.join(known_tool_parsers())}")


def known_tool_parsers() -> tuple[str, ...]:
    """Every name a deployment may give as its tool parser: none, the families, their aliases."""
    return (NO_TOOL_PARSER, *sorted({*tool_parser_families(), *TOOL_PARSER_ALIASES}))


def tool_parser_option(options: Mapping[str, str]) -> tuple[str, dict[str, str]]:
    """An engine's `tool_parser` option, normalized, and its other options apart from it;
    InvalidRequest for an unknown parser."""
    rest = {k: v for k, v in options.items() if k != "tool_parser"}
    try:
        return normalize_tool_parser(options.get("tool_parser", "")), rest
    except ValueError as exc:
        raise InvalidRequest(str(exc)) from None


def dialect_for(family: str | None, *, think: tuple[str, str] | None = None) -> Dialect:
    """The dialect of an mlx-lm tool-parser family (None: no tool calls), with think markers."""
    if not family:
        return Dialect(think=think)
    module = importlib.import_module(f"mlx_lm.tool_parsers.{family}")
    calls = (module.tool_call_start, module.tool_call_end)
    return Dialect(think=think, calls=calls, parse_call=module.parse_tool_call, family=family)


def capabilities(tokenizer: Any, dialect: Dialect) -> frozenset[str]:
    """TOOLS if the chat template renders tools and the dialect parses calls; REASONING if the
    dialect has think markers. (Grammars and logprobs are the engine's to add.)"""
    out = {REASONING_CAPABILITY} if dialect.think else set()
    if dialect.parse_call is not None and _renders_tools(tokenizer):
        out.add(TOOLS)
    return frozenset(out)


def _renders_tools(tokenizer: Any) -> bool:
    """Whether the chat template writes a tool it is given into the prompt."""
    probe = {"type": "function", "function": {"name": "probe_tool_4f1c", "parameters": {}}}
    try:
        text = tokenizer.apply_chat_template(
            [{"role": "user", "content": "hi"}],
            tools=[probe],
            tokenize=False,
            add_generation_prompt=True,
        )
    except Exception:  # no template, or one that refuses tools
        return False
    return isinstance(text, str) and "probe_tool_4f1c" in text


def starts_in_reasoning(dialect: Dialect, prompt_tail: str) -> bool:
    """Whether the rendered prompt ends inside a think block (templates that open it)."""
    if dialect.think is None:
        return False
    start, end = dialect.think
    return prompt_tail.rfind(start) > max(prompt_tail.rfind(end), -1)


def new_call_id() -> str:
    """A tool call's id: "call_" and 24 random hex digits."""
    return "call_" + secrets.token_hex(12)


class OutputParser:
    """One generation's parser: pieces of text in, typed events out (see the module docstring)."""

    def __init__(
        self, dialect: Dialect, *, tools: Sequence[Tool] = (), reasoning: bool = False
    ) -> None:
        self._dialect, self._tools = dialect, [_tool_dict(t) for t in tools]
        self._freeform = frozenset(t.name for t in tools if t.grammar is not None)
        self._state = REASONING if reasoning and dialect.think else NORMAL
        self._held = ""  # text that may be the start of a marker
        self._call = ""  # the open call's text
        self._strip = False  # the answer's whitespace right after a marker is dropped
        self._pending = 0  # tokens fed but not yet carried by an event
        self._index = 0
        self.reasoning_tokens = 0

    @property
    def made_calls(self) -> bool:
        """Whether at least one tool call was parsed."""
        return self._index > 0

    def feed(self, text: str, tokens: int = 1) -> list[TokenEvent]:
        """Take a piece of decoded text covering `tokens` tokens; return the events it releases."""
        if self._state == REASONING:
            self.reasoning_tokens += tokens
        self._pending += tokens
        out: list[TokenEvent] = []
        self._held += text
        while self._held:
            found = self._next_marker()
            if found is None:
                break
            at, marker, state = found
            self._emit(self._held[:at], out)
            self._held = self._held[at + len(marker) :]
            self._enter(state, out)
        keep = _partial_length(self._held, self._markers())
        self._emit(self._held[: len(self._held) - keep], out)
        self._held = self._held[len(self._held) - keep :]
        return self._carry(out)

    def finish(self) -> list[TokenEvent]:
        """Release what is held at the end of the generation; an open call is parsed as is."""
        out: list[TokenEvent] = []
        self._emit(self._held, out)
        self._held = ""
        if self._state == CALL:
            self._close_call(out, closed=False)
        out = self._carry(out)
        if self._pending:  # tokens that released no text (EOS, markers, dropped whitespace)
            kind = ReasoningDelta if self._state == REASONING else Delta
            out.append(kind("", self._pending))
            self._pending = 0
        return out

    def _markers(self) -> list[tuple[str, str]]:
        """The markers that can end the current state, with the state each one leads to."""
        d, out = self._dialect, []
        if d.think and self._state in (NORMAL, REASONING):
            out.append((d.think[0] if self._state == NORMAL else d.think[1], _flip(self._state)))
        if d.calls and d.parse_call:
            out.append((d.calls[1], NORMAL) if self._state == CALL else (d.calls[0], CALL))
        return out

    def _next_marker(self) -> tuple[int, str, str] | None:
        """The earliest marker in the held text: where, which, and the state it leads to."""
        hits = [(self._held.find(m), m, s) for m, s in self._markers()]
        hits = [h for h in hits if h[0] >= 0]
        return min(hits) if hits else None

    def _enter(self, state: str, out: list[TokenEvent]) -> None:
        """Leave the current state for `state`; closing a call parses it."""
        if self._state == CALL:
            self._close_call(out, closed=True)
        self._strip = state == NORMAL
        self._state = state

    def _emit(self, text: str, out: list[TokenEvent]) -> None:
        """Text of the current state: reasoning, answer, or a call's body."""
        if not text:
            return
        if self._state == CALL:
            self._call += text
        elif self._state == REASONING:
            out.append(ReasoningDelta(text, 0))
        else:
            self._answer(text, out)

    def _answer(self, text: str, out: list[TokenEvent]) -> None:
        """Answer text, less the newlines a template puts after `</think>` or between calls."""
        if self._strip:
            text = text.lstrip()
            if not text:
                return
            self._strip = False
        if out and isinstance(out[-1], Delta):
            out[-1] = Delta(out[-1].text + text, 0)
        else:
            out.append(Delta(text, 0))

    def _close_call(self, out: list[TokenEvent], *, closed: bool) -> None:
        """Parse the call's text into events; text that does not parse goes out as answer."""
        text, self._call = self._call, ""
        calls = self._parse(text)
        if calls is None:
            start, end = self._dialect.calls or ("", "")
            self._answer(start + text + (end if closed else ""), out)
            return
        for name, arguments in calls:
            i, self._index = self._index, self._index + 1
            out.append(ToolCallDelta(index=i, id=new_call_id(), name=name))
            out.append(ToolCallDelta(index=i, arguments=arguments))
            out.append(ToolCallDelta(index=i, done=True))

    def _parse(self, text: str) -> list[tuple[str, str]] | None:
        """The calls in a call's text as (name, arguments JSON), or None if it does not parse."""
        assert self._dialect.parse_call is not None  # no call state without a parser
        if freeform := self._freeform_call(text):
            return [freeform]
        try:
            parsed = self._dialect.parse_call(text, self._tools or None)
            items = parsed if isinstance(parsed, list) else [parsed]
            return [_call(item) for item in items] or None
        except Exception:  # each family's parser raises what it likes on bad text
            return None

    def _freeform_call(self, text: str) -> tuple[str, str] | None:
        """A freeform tool's call, `{"name": ...}` then its raw input (see engines/grammar.py),
        as (name, arguments with the input); None for any other text."""
        if not self._freeform:
            return None
        header, newline, raw = text.removeprefix("\n").partition("\n")
        try:
            head = json.loads(header)
        except ValueError:
            return None
        if not newline or not isinstance(head, dict) or set(head) != {"name"}:
            return None
        if head["name"] not in self._freeform:
            return None
        return head["name"], json.dumps({"input": raw}, ensure_ascii=False)

    def _carry(self, out: list[TokenEvent]) -> list[TokenEvent]:
        """Give the tokens fed so far to the first event released."""
        if out and self._pending:
            out[0] = _with_tokens(out[0], self._pending)
            self._pending = 0
        return out


def _call(item: Any) -> tuple[str, str]:
    """A parsed call as (name, arguments as JSON object text)."""
    name, arguments = item["name"], item.get("arguments", {})
    if isinstance(arguments, str):
        arguments = json.loads(arguments) if arguments.strip() else {}
    if not isinstance(name, str) or not isinstance(arguments, dict):
        raise ValueError("a call needs a name and an object of arguments")
    return name, json.dumps(arguments, ensure_ascii=False)


def _with_tokens(event: TokenEvent, tokens: int) -> TokenEvent:
    """The event with `tokens` more tokens."""
    return dataclasses.replace(event, tokens=event.tokens + tokens)


def _flip(state: str) -> str:
    return NORMAL if state == REASONING else REASONING


def _partial_length(text: str, markers: list[tuple[str, str]]) -> int:
    """Length of the longest tail of `text` that is a proper prefix of a marker."""
    best = 0
    for marker, _ in markers:
        for n in range(min(len(marker) - 1, len(text)), best, -1):
            if text.endswith(marker[:n]):
                best = n
                break
    return best


def _tool_dict(tool: Tool) -> dict[str, Any]:
    """A tool as mlx-lm's parsers read it (OpenAI's function-tool shape); they use its types."""
    try:
        parameters = json.loads(tool.parameters)
    except ValueError:
        parameters = {}
    return {
        "type": "function",
        "function": {"name": tool.name, "description": tool.description, "parameters": parameters},
    }
