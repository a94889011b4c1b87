"""`POST /v1/embeddings` in the OpenAI wire format (gateway/openai/embeddings.py): what is
refused, with which parameter named, and how the answer is shaped, base64 included."""

from __future__ import annotations

import base64
import json
import struct
from typing import Any

import pytest

from cluster.errors import InvalidRequest
from cluster.gateway.openai.embeddings import (
    MAX_INPUTS,
    EmbeddingRequest,
    as_base64,
    embedding_list,
    parse_embedding_request,
)


def parsed(**fields: Any) -> EmbeddingRequest:
    return parse_embedding_request(json.dumps({"model": "demo", **fields}))


def rejected(body: dict[str, Any] | str) -> InvalidRequest:
    raw = body if isinstance(body, str) else json.dumps(body)
    with pytest.raises(InvalidRequest) as info:
        parse_embedding_request(raw)
    return info.value


def unpacked(text: str) -> list[float]:
    raw = base64.b64decode(text)
    return list(struct.unpack(f"<{len(raw) // 4}f", raw))


def test_one_text_or_a_list_of_texts() -> None:
    assert parsed(input="hello").input == ["hello"]
    req = parsed(input=["a", "b", "c"], user="u-1", encoding_format="base64")
    assert req.input == ["a", "b", "c"] and req.encoding_format == "base64"
    assert parsed(input="x").encoding_format == "float" and parsed(input="x").dimensions is None


@pytest.mark.parametrize(
    ("body", "param", "code"),
    [
        ({"model": "demo", "input": [1, 2, 3]}, "input", "unsupported_value"),
        ({"model": "demo", "input": [[1, 2], [3]]}, "input", "unsupported_value"),
        ({"model": "demo", "input": []}, "input", "invalid_value"),
        ({"model": "demo", "input": ["ok", ""]}, "input.1", "invalid_value"),
        ({"model": "demo", "input": {"text": "hi"}}, "input", "invalid_type"),
        ({"model": "demo", "input": ["x"] * (MAX_INPUTS + 1)}, "input", "invalid_value"),
        ({"model": "demo"}, "input", "missing_required_parameter"),
        ({"input": "hi"}, "model", "missing_required_parameter"),
        ({"model": "demo", "input": "hi", "encoding_format": "int8"}, "encoding_format", None),
        ({"model": "demo", "input": "hi", "dimensions": 0}, "dimensions", "invalid_value"),
    ],
)
def test_a_bad_request_is_a_400_naming_the_parameter(
    body: dict[str, Any], param: str, code: str | None
) -> None:
    err = rejected(body)
    assert err.status == 400 and err.param == param
    if code is not None:
        assert err.code == code


def test_token_ids_are_refused_in_words() -> None:
    assert "token-id inputs are not supported" in rejected({"model": "m", "input": [7]}).message


def test_not_json_is_a_400() -> None:
    assert rejected("{nope").code == "invalid_json"


def test_dimensions_must_be_the_models_own() -> None:
    vectors = [[0.6, 0.8, 0.0]]
    parsed(input="x", dimensions=3).check_dimensions(vectors)
    parsed(input="x").check_dimensions(vectors)
    with pytest.raises(InvalidRequest) as info:
        parsed(input="x", dimensions=2).check_dimensions(vectors)
    assert info.value.param == "dimensions" and "3 dimensions" in info.value.message


def test_the_answer_is_openais_list_shape() -> None:
    body = embedding_list("demo", [[0.6, 0.8], [1.0, 0.0]], 5)
    assert body == {
        "object": "list",
        "data": [
            {"object": "embedding", "index": 0, "embedding": [0.6, 0.8]},
            {"object": "embedding", "index": 1, "embedding": [1.0, 0.0]},
        ],
        "model": "demo",
        "usage": {"prompt_tokens": 5, "total_tokens": 5},
    }


def test_base64_is_little_endian_float32_and_round_trips() -> None:
    vector = [0.5, -0.25, 1.0, 3.0e-5]
    text = as_base64(vector)
    assert base64.b64decode(text)[:4] == struct.pack("<f", 0.5)
    assert unpacked(text) == pytest.approx(vector, rel=1e-6)
    body = embedding_list("demo", [vector], 2, "base64")
    assert unpacked(body["data"][0]["embedding"]) == pytest.approx(vector, rel=1e-6)
