"""Grammar-constrained decoding on vLLM: the request's grammar as a `guidance` structured output.

engines/grammar.py writes what a request must match (a schema, a forced tool call in the model's
own markup, a client's Lark or regex) as one Lark grammar; vLLM's `guidance` backend (llguidance,
as on MLX) enforces it inside its sampler. vLLM checks a grammar without the vocabulary, so a
special token the model lacks would only fail in its engine core, ending the output at once;
`Grammars.check` compiles it here with the model's vocabulary first and refuses it instead.
"""

from __future__ import annotations

from typing import Any

import llguidance
import llguidance.hf
from vllm.sampling_params import StructuredOutputsParams

from node_agent.engines.grammar import GrammarUnsupported, ToolMarkup, grammar_for, markup_for
from node_agent.engines.parsing import Dialect
from node_agent.errors import InvalidRequest
from node_agent.types import GenerateRequest

MAX_REASON = 300  # characters of llguidance's message; it may list the whole special vocabulary


class Grammars:
    """One model's grammars: its vocabulary as llguidance sees it, and its tool-call markup."""

    def __init__(self, tokenizer: Any, *, width: int, dialect: Dialect) -> None:
        # The width vLLM's own guidance backend gives it: the logits' (padded) vocabulary.
        self.lltokenizer = llguidance.hf.from_tokenizer(tokenizer, max(width, len(tokenizer)))
        self.markup: ToolMarkup | None = (
            markup_for(dialect.family, tokenizer.get_vocab()) if dialect.family else None
        )

    def grammar(self, request: GenerateRequest) -> str | None:
        """The Lark grammar the request is held to, or None; InvalidRequest if it cannot be."""
        try:
            return grammar_for(request, self.markup)
        except (GrammarUnsupported, ValueError) as exc:  # ValueError: a schema that is not JSON
            raise InvalidRequest(f"cannot constrain this request: {exc}") from None

    def check(self, grammar: str) -> StructuredOutputsParams:
        """vLLM's structured output for a grammar that compiles; InvalidRequest if it does not."""
        try:  # read as vLLM reads it: Lark, or GBNF turned into Lark
            error = llguidance.LLMatcher.validate_grammar(
                llguidance.grammar_from("grammar", grammar), self.lltokenizer
            )
        except ValueError as exc:
            error = str(exc)
        if error:
            reason = " ".join(error.split())
            if len(reason) > MAX_REASON:
                reason = reason[:MAX_REASON] + "…"
            raise InvalidRequest(f"the grammar does not compile: {reason}")
        return StructuredOutputsParams(grammar=grammar)

    def token_bytes(self, token: int) -> bytes:
        """A token's bytes as the vocabulary holds them (part of a character, maybe)."""
        data: bytes = self.lltokenizer.decode_bytes([token])
        return data
