"""The OpenAI wire format, embeddings: `POST /v1/embeddings` parsed, and its answer encoded.

Pure: no I/O. Inputs are texts (one, or a list of up to MAX_INPUTS); token-id inputs are refused
with the parameter named, as is a `dimensions` the model's vectors do not have (nothing here
shortens a vector). `encoding_format: "base64"` packs each vector as little-endian float32, as
OpenAI does (its Python client asks for base64 unless told otherwise, and unpacks it so).
"""

from __future__ import annotations

import base64
import struct
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field, ValidationError

from cluster.errors import InvalidRequest
from cluster.gateway.bounds import RequestedModel, TokenCount
from cluster.gateway.openai.parse import validation_error_to_api
from cluster.gateway.openai.tools import Lenient, field_error, unsupported

MAX_INPUTS = 256  # texts in one request; each is a request's worth of prefill on the node


def _as_texts(value: Any) -> Any:
    """One text as a list of one; token ids (a list of ints, or of lists) refused by name."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and any(isinstance(v, int | list) for v in value):
        raise unsupported("token-id inputs are not supported; send the text instead")
    if isinstance(value, list):
        return value
    raise field_error("list_type", "Input should be a string or a list of strings")


Text = Annotated[str, Field(min_length=1)]


class EmbeddingRequest(Lenient):
    """`POST /v1/embeddings`."""

    model: RequestedModel
    input: Annotated[
        list[Text], BeforeValidator(_as_texts), Field(min_length=1, max_length=MAX_INPUTS)
    ]
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: TokenCount | None = None
    user: str | None = None  # accepted; changes nothing

    def check_dimensions(self, vectors: list[list[float]]) -> None:
        """400 unless the request's `dimensions`, if any, is what the model's vectors have."""
        have = len(vectors[0]) if vectors else 0
        if self.dimensions is not None and self.dimensions != have:
            raise InvalidRequest(
                f"This model's embeddings have {have} dimensions; "
                f"dimensions={self.dimensions} is not supported.",
                param="dimensions",
                code="unsupported_value",
            )


def parse_embedding_request(body: bytes | str) -> EmbeddingRequest:
    """Parse a `/v1/embeddings` body; a bad one raises InvalidRequest naming the parameter."""
    try:
        return EmbeddingRequest.model_validate_json(body)
    except ValidationError as exc:
        raise validation_error_to_api(exc) from None


def embedding_list(
    model: str, vectors: list[list[float]], prompt_tokens: int, encoding_format: str = "float"
) -> dict[str, Any]:
    """The `/v1/embeddings` answer: each vector as floats, or as base64 float32."""
    packed = encoding_format == "base64"
    data = [
        {"object": "embedding", "index": i, "embedding": as_base64(v) if packed else v}
        for i, v in enumerate(vectors)
    ]
    usage = {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens}
    return {"object": "list", "data": data, "model": model, "usage": usage}


def as_base64(vector: list[float]) -> str:
    """A vector as OpenAI's base64: little-endian float32, packed."""
    return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode("ascii")
