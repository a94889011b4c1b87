"""Grammar-constrained decoding inside MLX's continuous batch: one llguidance matcher per row.

`Grammars` belongs to a loaded model: it holds llguidance's view of the vocabulary (built once
at load; about a second for a 150k vocabulary) and the model's tool-call markup, and compiles a
request's grammar (engines/grammar.py) into a `GrammarProcessor`. The engine compiles on the
asyncio side, in a thread, so the worker thread only steps matchers. The processor rides in the
request's row of mlx-lm's BatchGenerator as its logits processor; constrained and free rows
share one batch.

mlx-lm calls a row's processor once per decode step as `proc(tokens, logits)`: `tokens` is the
row's context with the token sampled at the previous step last, `logits` its (1, width) row.
The batch runs one step ahead, so the processor may see the row's final token (EOS) before the
row is dropped; a finished or failed matcher then allows only EOS. Knowing the last token
means waiting for the previous step's sample, so the processor first starts this step's
forward pass, and computes the mask while it runs.
"""

from __future__ import annotations

import logging
from typing import Any

import mlx.core as mx
import numpy as np

from node_agent.engines.grammar import GrammarUnsupported, grammar_for, markup_for
from node_agent.engines.parsing import Dialect
from node_agent.errors import InvalidRequest
from node_agent.types import GenerateRequest

try:
    import llguidance
    import llguidance.hf

    HAVE_LLGUIDANCE = True
except ImportError:  # then the node serves free requests only
    HAVE_LLGUIDANCE = False

logger = logging.getLogger(__name__)

_SHIFTS = np.arange(32, dtype=np.uint32)  # numpy: an MLX array belongs to its maker's thread


class Grammars:
    """One model's grammar compiler: its vocabulary as llguidance sees it, and its markup."""

    def __init__(self, tokenizer: Any, *, width: int, dialect: Dialect) -> None:
        if not HAVE_LLGUIDANCE:
            raise RuntimeError("llguidance is not installed")
        hf = tokenizer._tokenizer  # mlx-lm's TokenizerWrapper around a fast HF tokenizer
        eos = sorted(tokenizer.eos_token_ids)
        self.lltokenizer = llguidance.hf.from_tokenizer(hf, n_vocab=width, eos_token=eos)
        self.markup = markup_for(dialect.family, hf.get_vocab()) if dialect.family else None
        self._eos_mask = _words(width, eos)

    def grammar(self, request: GenerateRequest) -> str | None:
        """The Lark grammar the request is held to, or None; InvalidRequest if it cannot be."""
        try:
            return grammar_for(request, self.markup)
        except (GrammarUnsupported, ValueError) as exc:  # ValueError: a schema that is not JSON
            raise InvalidRequest(f"cannot constrain this request: {exc}") from None

    def compile(self, grammar: str) -> GrammarProcessor:
        """A fresh matcher for one request's row; InvalidRequest if the grammar is bad."""
        matcher = llguidance.LLMatcher(self.lltokenizer, grammar, log_level=0)
        if matcher.is_error():
            raise InvalidRequest(f"the grammar does not compile: {matcher.get_error()}")
        return GrammarProcessor(matcher, self._eos_mask)

    def token_bytes(self, token: int) -> bytes:
        """A token's bytes as the vocabulary holds them (part of a character, maybe)."""
        data: bytes = self.lltokenizer.decode_bytes([token])
        return data


class GrammarProcessor:
    """One row's logits processor: advance the matcher by the last token, mask the logits."""

    def __init__(self, matcher: Any, eos_mask: np.ndarray) -> None:
        self.matcher = matcher
        self._eos_mask = eos_mask
        self._mask = np.empty_like(eos_mask)
        self._started = False

    def __call__(self, tokens: mx.array, logits: mx.array) -> mx.array:
        """The row's logits with every token the grammar forbids at -inf."""
        # The forward pass runs while the mask is made.
        mx.async_eval(logits)  # type: ignore[no-untyped-call]
        if self._started:
            self.matcher.consume_token(tokens[-1].item())  # waits for the previous step's sample
        self._started = True
        m = self.matcher
        if m.is_error() or m.is_stopped():
            if m.is_error():
                logger.warning("grammar matcher failed: %s", m.get_error())
            self._mask[:] = self._eos_mask
        else:
            m.unsafe_compute_mask_ptr(self._mask.ctypes.data, self._mask.nbytes)
            if not self._mask.any():  # never hand the sampler a row of -inf
                self._mask[:] = self._eos_mask
        return apply_mask(logits, self._mask)


def apply_mask(logits: mx.array, words: np.ndarray) -> mx.array:
    """`logits` with -inf where the bit mask (32 tokens per int32 word) has a 0."""
    bits = (mx.array(words.view(np.uint32))[:, None] >> mx.array(_SHIFTS)) & 1
    allowed = bits.reshape(-1)[: logits.shape[-1]].astype(mx.bool_)
    return mx.where(allowed, logits, mx.array(-mx.inf, dtype=logits.dtype))


def logits_width(model: Any) -> int:
    """How many logits the model gives per position (its vocabulary, padded)."""
    width = getattr(getattr(model, "args", None), "vocab_size", None)
    if isinstance(width, int):
        return width
    return int(model(mx.array([[0]])).shape[-1])


def _words(width: int, allowed: list[int]) -> np.ndarray:
    """A bit mask of `width` tokens, in int32 words, with only `allowed` set."""
    bits = np.zeros(-(-width // 32) * 32, dtype=bool)
    bits[allowed] = True
    return np.packbits(bits, bitorder="little").view(np.int32).copy()
