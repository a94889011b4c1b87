"""One row's grammar processor: its mask, its end, and the requests it refuses."""

from __future__ import annotations

import functools
import json
from typing import Any

import mlx.core as mx
import numpy as np
import pytest
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from node_agent.engines.mlx_grammar import Grammars, apply_mask
from node_agent.engines.parsing import Dialect, dialect_for
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

EOS = 0
WIDTH = 512  # logits past the vocabulary, as in padded models


class Wrapper:
    """The two things Grammars reads off mlx-lm's TokenizerWrapper."""

    def __init__(self, hf: PreTrainedTokenizerFast) -> None:
        self._tokenizer, self.eos_token_ids = hf, {EOS}


@functools.cache
def wrapper() -> Wrapper:
    """A small byte-level BPE whose call markers are added tokens, as in Qwen's."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=["<|endoftext|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(['{"name": "ada", "age": 36}'] * 5, trainer)
    tok.add_tokens(["<tool_call>", "</tool_call>"])
    hf = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>")  # type: ignore[no-untyped-call]
    return Wrapper(hf)


def grammars(dialect: Dialect | None = None) -> Grammars:
    return Grammars(wrapper(), width=WIDTH, dialect=dialect or dialect_for("json_tools"))


def request(**kw: Any) -> GenerateRequest:
    return GenerateRequest(request_id="r", model="m", messages=(ChatMessage("user", "hi"),), **kw)


def allowed(logits: mx.array) -> set[int]:
    return {int(i) for i in np.flatnonzero(np.isfinite(np.array(logits[0])))}


def test_the_mask_keeps_exactly_the_allowed_columns() -> None:
    words = np.zeros(WIDTH // 32, dtype=np.int32)
    words[0], words[3] = 0b101, np.int32(-(2**31))  # tokens 0, 2 and 127
    logits = apply_mask(mx.zeros((1, WIDTH)), words)
    assert allowed(logits) == {0, 2, 127}


def test_a_finished_document_allows_only_the_end_of_turn() -> None:
    schema = {"type": "object", "properties": {"age": {"type": "integer"}}, "required": ["age"]}
    g = grammars()
    text = g.grammar(request(constraint=Constraint(ConstraintKind.JSON_SCHEMA, json.dumps(schema))))
    assert text is not None
    processor = g.compile(text)
    tokens = g.lltokenizer.tokenize_str('{"age": 36}')
    logits = mx.zeros((1, WIDTH))
    history = [5]  # the prompt: its last token is not the grammar's
    for token in tokens:
        assert token in allowed(processor(mx.array(history), logits))
        history.append(token)
    assert allowed(processor(mx.array(history), logits)) == {EOS}
    history.append(EOS)  # the batch runs a step ahead: it may show the processor its EOS
    assert allowed(processor(mx.array(history), logits)) == {EOS}


def test_a_forced_call_opens_with_the_marker_token() -> None:
    tool = Tool(name="f", parameters='{"type": "object"}')
    g = grammars()
    text = g.grammar(request(tools=(tool,), tool_choice=ToolChoice(ToolChoiceMode.REQUIRED)))
    assert text is not None
    first = allowed(g.compile(text)(mx.array([5]), mx.zeros((1, WIDTH))))
    assert first == {wrapper()._tokenizer.convert_tokens_to_ids("<tool_call>")}


def test_bad_grammars_and_unknown_markup_are_invalid_requests() -> None:
    with pytest.raises(InvalidRequest, match="does not compile"):
        grammars().compile("start: (")
    forced = request(tools=(Tool(name="f"),), tool_choice=ToolChoice(ToolChoiceMode.REQUIRED))
    with pytest.raises(InvalidRequest, match="markup"):
        grammars(Dialect()).grammar(forced)
    with pytest.raises(InvalidRequest):
        grammars().grammar(request(constraint=Constraint(ConstraintKind.JSON_SCHEMA, "{nope")))
