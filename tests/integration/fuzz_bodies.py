"""Request bodies for the intake fuzzer (test_intake_fuzz.py): generated ones, and mutations of
valid ones.

The generated bodies have each route's fields, each value mostly of the right type and in range
and sometimes anything at all, so that a good share reach the node and the rest probe every
check on the way. max_tokens is always present and tiny unless it is the thing being broken, so
that what does reach the `demo` model is answered fast.
"""

from __future__ import annotations

import json
from typing import Any

from hypothesis import strategies as st

HUGE_INTS = [2**32, 2**63, -(2**63) - 1, 2**64, -(2**70), 10**30, 10**400]

leaf = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.sampled_from(HUGE_INTS),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=12),
)
# Any JSON value: what a field gets when its type is wrong.
anything = st.recursive(
    leaf,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=8,
)


def mostly(good: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """`good` three times in four, any JSON value otherwise."""
    return st.one_of(good, good, good, anything)


models = mostly(st.sampled_from(["demo", "demo", "demo", "no-such-model", "", "x" * 257]))
# Within range only tiny (a budget up to the context is valid, and slow); else out of range.
tokens = mostly(st.one_of(st.integers(1, 3), st.integers(max_value=0), st.sampled_from(HUGE_INTS)))
small_float = mostly(st.floats(-1, 3, allow_nan=False))
seeds = mostly(st.one_of(st.integers(-10, 10), st.sampled_from(HUGE_INTS)))
stops = mostly(
    st.one_of(st.text(max_size=5), st.lists(st.text(max_size=5), max_size=6), st.just("s" * 300))
)
texts = mostly(st.text(max_size=40))
roles = mostly(st.sampled_from(["system", "user", "assistant", "developer", "tool", "robot"]))
unknown = st.dictionaries(st.text(min_size=1, max_size=10), anything, max_size=2)
schema = mostly(
    st.fixed_dictionaries(
        {"type": st.sampled_from(["object", "string", "nonsense"])},
        optional={"properties": st.dictionaries(st.text(max_size=5), anything, max_size=2)},
    )
)
function = st.fixed_dictionaries(
    {"name": mostly(st.sampled_from(["get_weather", "", "a b"]))},
    optional={"description": texts, "parameters": schema, "strict": mostly(st.booleans())},
)


def _message(content: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return mostly(st.fixed_dictionaries({"role": roles, "content": content}))


def _body(
    required: dict[str, st.SearchStrategy[Any]], optional: dict[str, st.SearchStrategy[Any]]
) -> st.SearchStrategy[dict[str, Any]]:
    """A body of these fields, plus now and then some unknown ones."""
    known = st.fixed_dictionaries(required, optional=optional)
    return st.builds(lambda k, u: {**u, **k}, known, st.one_of(st.just({}), unknown))


_SAMPLING = {
    "temperature": small_float,
    "top_p": small_float,
    "stream": mostly(st.booleans()),
    "seed": seeds,
    "stop": stops,
    "n": mostly(st.integers(0, 10)),
    "user": texts,
}
chat = _body(
    {
        "model": models,
        "messages": mostly(st.lists(_message(texts), max_size=3)),
        "max_tokens": tokens,
    },
    {
        **_SAMPLING,
        "max_completion_tokens": tokens,
        "logprobs": mostly(st.booleans()),
        "top_logprobs": mostly(st.integers(-1, 25)),
        "tools": mostly(
            st.lists(
                st.fixed_dictionaries({"type": st.just("function"), "function": function}),
                max_size=2,
            )
        ),
        "tool_choice": mostly(st.sampled_from(["auto", "none", "required"])),
        "response_format": mostly(st.sampled_from([{"type": "text"}, {"type": "json_object"}])),
        "stream_options": mostly(st.fixed_dictionaries({"include_usage": mostly(st.booleans())})),
    },
)
completions = _body(
    {
        "model": models,
        "prompt": mostly(st.one_of(texts, st.lists(texts, max_size=2))),
        "max_tokens": tokens,
    },
    {**_SAMPLING, "logprobs": mostly(st.integers(-1, 6)), "echo": mostly(st.booleans())},
)
anthropic_block = mostly(
    st.fixed_dictionaries({"type": st.sampled_from(["text", "image", "tool_use"]), "text": texts})
)
messages = _body(
    {
        "model": models,
        "messages": mostly(
            st.lists(
                _message(mostly(st.one_of(texts, st.lists(anthropic_block, max_size=2)))),
                max_size=3,
            )
        ),
        "max_tokens": tokens,
    },
    {
        "system": mostly(st.one_of(texts, st.lists(anthropic_block, max_size=2))),
        "temperature": small_float,
        "top_p": small_float,
        "top_k": tokens,
        "stop_sequences": stops,
        "stream": mostly(st.booleans()),
        "thinking": mostly(
            st.fixed_dictionaries(
                {"type": st.sampled_from(["enabled", "disabled"]), "budget_tokens": tokens}
            )
        ),
        "metadata": mostly(st.fixed_dictionaries({"user_id": texts})),
        "tools": mostly(
            st.lists(st.fixed_dictionaries({"name": texts, "input_schema": schema}), max_size=2)
        ),
        "tool_choice": mostly(
            st.fixed_dictionaries({"type": st.sampled_from(["auto", "any", "none", "tool"])})
        ),
    },
)
responses = _body(
    {
        "model": models,
        "input": mostly(st.one_of(texts, st.lists(_message(texts), max_size=3))),
        "max_output_tokens": tokens,
        "store": st.just(False),
    },
    {
        "instructions": texts,
        "temperature": small_float,
        "top_p": small_float,
        "stream": mostly(st.booleans()),
        "top_logprobs": mostly(st.integers(-1, 25)),
        "max_tool_calls": tokens,
        "truncation": mostly(st.sampled_from(["auto", "disabled"])),
        "text": mostly(
            st.fixed_dictionaries(
                {
                    "format": mostly(
                        st.fixed_dictionaries({"type": st.sampled_from(["text", "json_object"])})
                    )
                }
            )
        ),
        "reasoning": mostly(
            st.fixed_dictionaries({"effort": mostly(st.sampled_from(["low", "high"]))})
        ),
        "tools": mostly(
            st.lists(st.builds(lambda f: {"type": "function", **f}, function), max_size=2)
        ),
    },
)
embeddings = _body(
    {"model": models, "input": mostly(st.one_of(texts, st.lists(texts, max_size=3)))},
    {
        "encoding_format": mostly(st.sampled_from(["float", "base64", "hex"])),
        "dimensions": tokens,
        "user": texts,
    },
)

ROUTES: dict[str, st.SearchStrategy[dict[str, Any]]] = {
    "/v1/chat/completions": chat,
    "/v1/completions": completions,
    "/v1/messages": messages,
    "/v1/responses": responses,
    "/v1/embeddings": embeddings,
}
USER = {"role": "user", "content": "Hi."}
VALID: dict[str, dict[str, Any]] = {
    "/v1/chat/completions": {"model": "demo", "messages": [USER], "max_tokens": 2, "stop": ["x"]},
    "/v1/completions": {"model": "demo", "prompt": "Hi.", "max_tokens": 2, "seed": 1},
    "/v1/messages": {"model": "demo", "messages": [USER], "max_tokens": 2, "stop_sequences": ["x"]},
    "/v1/responses": {"model": "demo", "input": "Hi.", "max_output_tokens": 2, "store": False},
    "/v1/embeddings": {"model": "demo", "input": ["Hi."]},
}


def _replace(body: dict[str, Any], key: str, value: Any) -> bytes:
    return json.dumps({**body, key: value}).encode()


def _invalid_utf8(body: dict[str, Any], key: str, value: Any) -> bytes:
    """The body with raw bytes that are no UTF-8 inside the field's text."""
    raw = json.dumps({**body, key: "@@"}).encode()
    return raw.replace(b'"@@"', b'"\xff\xfe\xc3(\xed\xa0\x80"', 1)


def _nested(body: dict[str, Any], key: str, value: Any) -> bytes:
    depth = 5_000
    return json.dumps({**body, key: "@@"}).encode().replace(b'"@@"', b"[" * depth + b"]" * depth)


MUTATIONS = {
    "huge integer": (_replace, st.sampled_from(HUGE_INTS)),
    "wrong type": (_replace, anything),
    "giant string": (_replace, st.sampled_from(["g" * 2**20, "\u0000" * 1000, "\ud800"])),
    "deep nesting": (_nested, st.none()),
    "invalid UTF-8": (_invalid_utf8, st.none()),
    "unknown field": (_replace, anything),
}


@st.composite
def mutated(draw: st.DrawFn, route: str) -> bytes:
    """A valid body of `route` with one field (or a new one) broken in one way."""
    body = VALID[route]
    kind = draw(st.sampled_from(sorted(MUTATIONS)))
    make, values = MUTATIONS[kind]
    key = draw(st.text(min_size=1, max_size=10)) if kind == "unknown field" else None
    key = key or draw(st.sampled_from([*body, "seed", "temperature", "n", "stream", "user"]))
    return make(body, key, draw(values))
