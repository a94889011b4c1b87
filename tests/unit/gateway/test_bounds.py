"""The bounds on what a client may send (gateway/bounds.py), in every dialect's schema: what the
agent's wire cannot carry, and strings that would reach the ledger or the stop scanner, are a
400 naming the parameter; what is within them parses as before."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest

from cluster.errors import InvalidRequest
from cluster.gateway.anthropic.parse import parse_messages
from cluster.gateway.bounds import MAX_MODEL_NAME, MAX_STOP_CHARS, MAX_TOKEN_COUNT
from cluster.gateway.openai.embeddings import parse_embedding_request
from cluster.gateway.openai.parse import ChatCompletionRequest, CompletionRequest, parse_request
from cluster.gateway.responses.parse import parse_response_request

USER = {"role": "user", "content": "Hi."}
DIALECTS: dict[str, tuple[Callable[[bytes], Any], dict[str, Any], str, str]] = {
    # name: (parser, a valid body, its token budget's field, its stop strings' field)
    "chat": (
        lambda b: parse_request(ChatCompletionRequest, b),
        {"model": "demo", "messages": [USER]},
        "max_tokens",
        "stop",
    ),
    "chat-new": (
        lambda b: parse_request(ChatCompletionRequest, b),
        {"model": "demo", "messages": [USER]},
        "max_completion_tokens",
        "stop",
    ),
    "completions": (
        lambda b: parse_request(CompletionRequest, b),
        {"model": "demo", "prompt": "Hi."},
        "max_tokens",
        "stop",
    ),
    "messages": (
        parse_messages,
        {"model": "demo", "messages": [USER], "max_tokens": 8},
        "max_tokens",
        "stop_sequences",
    ),
    "responses": (
        parse_response_request,
        {"model": "demo", "input": "Hi.", "store": False},
        "max_output_tokens",
        "",
    ),
}


def parsed(dialect: str, **changes: Any) -> Any:
    parse, body, _, _ = DIALECTS[dialect]
    return parse(json.dumps({**body, **changes}).encode())


def refused(dialect: str, **changes: Any) -> InvalidRequest:
    with pytest.raises(InvalidRequest) as err:
        parsed(dialect, **changes)
    return err.value


@pytest.mark.parametrize("dialect", sorted(DIALECTS))
def test_a_token_budget_past_the_wire_is_refused(dialect: str) -> None:
    field = DIALECTS[dialect][2]
    for absurd in (MAX_TOKEN_COUNT + 1, 2**64, 10**400):
        assert refused(dialect, **{field: absurd}).param == field
    assert getattr(parsed(dialect, **{field: MAX_TOKEN_COUNT}), field) == MAX_TOKEN_COUNT


@pytest.mark.parametrize("dialect", sorted(DIALECTS))
def test_a_model_name_is_at_most_256_characters(dialect: str) -> None:
    assert refused(dialect, model="m" * (MAX_MODEL_NAME + 1)).param == "model"
    assert parsed(dialect, model="m" * MAX_MODEL_NAME).model == "m" * MAX_MODEL_NAME


@pytest.mark.parametrize("dialect", ["chat", "completions", "messages"])
def test_stop_strings_are_short_and_few(dialect: str) -> None:
    field = DIALECTS[dialect][3]
    error = refused(dialect, **{field: ["s" * (MAX_STOP_CHARS + 1)]})
    assert error.param == f"{field}.0"
    assert refused(dialect, **{field: ["a", "b", "c", "d", "e"]}).param == field
    assert parsed(dialect, **{field: ["s" * MAX_STOP_CHARS]})
    assert getattr(parsed(dialect, **{field: None}), field) is None  # null: none, not a 500


@pytest.mark.parametrize("dialect", ["chat", "completions"])
def test_a_seed_is_an_int64(dialect: str) -> None:
    for absurd in (2**63, -(2**63) - 1, 2**70):
        assert refused(dialect, seed=absurd).param == "seed"
    assert parsed(dialect, seed=-(2**63)).seed == -(2**63)
    assert parsed(dialect, seed=2**63 - 1).seed == 2**63 - 1


def test_the_ignored_numbers_are_bounded_too() -> None:
    assert refused("messages", top_k=2**64).param == "top_k"
    thinking = {"type": "enabled", "budget_tokens": 2**64}
    assert refused("messages", thinking=thinking).param == "thinking.budget_tokens"
    assert refused("responses", max_tool_calls=2**64).param == "max_tool_calls"


def test_embeddings_model_and_dimensions_are_bounded() -> None:
    def embedding(**changes: Any) -> InvalidRequest:
        body = {"model": "demo", "input": "Hi.", **changes}
        with pytest.raises(InvalidRequest) as err:
            parse_embedding_request(json.dumps(body).encode())
        return err.value

    assert embedding(model="m" * (MAX_MODEL_NAME + 1)).param == "model"
    assert embedding(dimensions=2**64).param == "dimensions"
