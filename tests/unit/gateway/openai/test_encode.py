"""Responses in the OpenAI wire format (gateway/openai/encode.py), checked against the official
`openai` client and its own types: shapes, streams, and the whole exchange through the client."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import httpx2
import openai
import pytest
from openai.types import Completion, Model
from openai.types.chat import ChatCompletion, ChatCompletionChunk, ChatCompletionMessageParam

from cluster.errors import (
    ApiError,
    Forbidden,
    InvalidRequest,
    ModelNotFound,
    NoCapacity,
    RateLimited,
    Unauthorized,
    UpstreamFailed,
    UpstreamTimeout,
)
from cluster.gateway.openai.encode import (
    SSE_DONE,
    Choice,
    chat_completion,
    dumps,
    finish_reason,
    model_card,
    model_list,
    text_completion,
)
from cluster.gateway.openai.parse import (
    AnyRequest,
    ChatCompletionRequest,
    CompletionRequest,
    parse_request,
    to_generate_request,
)
from cluster.gateway.openai.stream import ChatStreamEncoder, CompletionStreamEncoder
from node_agent.types import Delta, Finished, GenerateEvent, Usage

USER: list[ChatCompletionMessageParam] = [{"role": "user", "content": "hi"}]
USAGE = Usage(
    prompt_tokens=7,
    completion_tokens=4,
    cached_prompt_tokens=3,
    ttft_seconds=0.01,
    decode_tokens_per_second=50.0,
    duration_seconds=0.1,
)
FINISHED = Finished("length", USAGE)
EVENTS: list[GenerateEvent] = [
    Delta("Hel", 1),
    Delta("lo", 1),
    Delta("", 1),
    Delta(' "wörld" ✓\n', 1),
    FINISHED,
]
TEXT = 'Hello "wörld" ✓\n'


# --- response shapes, checked with the client's own types --------------------------------------


def frames(raw: bytes) -> list[str]:
    """The `data:` payloads of an SSE body, checking the framing on the way."""
    assert raw.endswith(SSE_DONE) and raw.count(SSE_DONE) == 1
    events = raw.decode().split("\n\n")
    assert events[-2:] == ["data: [DONE]", ""]
    assert all(e.startswith("data: ") and "\n" not in e for e in events[:-2])
    return [e.removeprefix("data: ") for e in events[:-2]]


def encode(
    encoder: ChatStreamEncoder | CompletionStreamEncoder, events: list[GenerateEvent]
) -> bytes:
    return b"".join(encoder.event(event) for event in events)


def gathered(text: str, finished: Finished) -> list[Choice]:
    """One choice that generated `text`, as the gateway gathers it."""
    choice = Choice()
    choice.add(Delta(text, 1))
    choice.finished = finished
    return [choice]


def chat_stream(include_usage: bool, events: list[GenerateEvent] = EVENTS) -> bytes:
    encoder = ChatStreamEncoder(
        request_id="r1", model="demo", created=1700000000, include_usage=include_usage
    )
    return encode(encoder, events)


def test_chat_completion_parses_as_the_clients_type() -> None:
    body = chat_completion(
        request_id="r1", model="demo", created=1700000000, choices=gathered(TEXT, FINISHED)
    )
    parsed = ChatCompletion.model_validate(json.loads(dumps(body)))
    assert parsed.id == "chatcmpl-r1" and parsed.object == "chat.completion"
    assert parsed.choices[0].message.content == TEXT
    assert parsed.choices[0].message.role == "assistant"
    assert parsed.choices[0].finish_reason == "length"
    assert parsed.usage is not None and parsed.usage.total_tokens == 11
    assert parsed.usage.prompt_tokens_details is not None
    assert parsed.usage.prompt_tokens_details.cached_tokens == 3


def test_text_completion_parses_as_the_clients_type() -> None:
    body = text_completion(
        request_id="r1", model="demo", created=1, choices=gathered("abc", Finished("stop", USAGE))
    )
    parsed = Completion.model_validate(json.loads(dumps(body)))
    assert (parsed.id, parsed.object, parsed.choices[0].text) == (
        "cmpl-r1",
        "text_completion",
        "abc",
    )
    assert parsed.choices[0].finish_reason == "stop" and parsed.usage is not None


def test_model_list_parses_as_the_clients_type() -> None:
    body = model_list([model_card("demo", created=5), model_card("qwen", created=5)])
    assert body["object"] == "list"
    models = [Model.model_validate(m) for m in body["data"]]
    assert [(m.id, m.object, m.owned_by) for m in models] == [
        ("demo", "model", "meterless"),
        ("qwen", "model", "meterless"),
    ]


@pytest.mark.parametrize(
    ("agent", "openai_reason"),
    [
        ("stop", "stop"),
        ("length", "length"),
        ("tool_calls", "tool_calls"),
        ("cancelled", "stop"),
        ("something-new", "stop"),
    ],
)
def test_finish_reasons(agent: str, openai_reason: str) -> None:
    assert finish_reason(agent) == openai_reason


def test_chat_stream_chunks_match_openais_sequence() -> None:
    payloads = frames(chat_stream(include_usage=True))
    chunks = [ChatCompletionChunk.model_validate_json(p) for p in payloads]
    assert chunks[0].choices[0].delta.role == "assistant"
    assert chunks[0].choices[0].delta.content == ""
    assert "".join(c.choices[0].delta.content or "" for c in chunks[1:-1]) == TEXT
    assert len(chunks) == 6  # role, 3 non-empty deltas, finish, usage
    finish, usage = chunks[-2], chunks[-1]
    assert finish.choices[0].finish_reason == "length"
    assert finish.choices[0].delta.content is None and finish.choices[0].delta.role is None
    assert usage.choices == [] and usage.usage is not None and usage.usage.total_tokens == 11
    assert all(json.loads(p)["usage"] is None for p in payloads[:-1])
    assert {c.id for c in chunks} == {"chatcmpl-r1"}
    assert {c.object for c in chunks} == {"chat.completion.chunk"}


def test_chat_stream_without_usage_has_no_usage_key() -> None:
    payloads = frames(chat_stream(include_usage=False))
    assert len(payloads) == 5
    assert not any("usage" in json.loads(p) for p in payloads)


def test_chat_stream_with_no_text_still_sends_the_role() -> None:
    payloads = frames(chat_stream(include_usage=False, events=[Finished("stop", USAGE)]))
    chunks = [ChatCompletionChunk.model_validate_json(p) for p in payloads]
    assert chunks[0].choices[0].delta.role == "assistant"
    assert chunks[1].choices[0].finish_reason == "stop"


def test_text_completion_stream_chunks() -> None:
    encoder = CompletionStreamEncoder(request_id="r9", model="demo", created=1, include_usage=True)
    payloads = [json.loads(p) for p in frames(encode(encoder, EVENTS))]
    assert "".join(p["choices"][0]["text"] for p in payloads[:-1]) == TEXT
    assert all(p["object"] == "text_completion" and p["id"] == "cmpl-r9" for p in payloads)
    # The SDK's Completion type insists on a finish_reason; OpenAI sends null until the end.
    assert Completion.model_validate(payloads[-2]).choices[0].finish_reason == "length"
    assert payloads[-1]["choices"] == [] and payloads[-1]["usage"]["completion_tokens"] == 4


def test_empty_delta_sends_nothing_but_counts_tokens() -> None:
    encoder = ChatStreamEncoder(request_id="r", model="m", created=1, include_usage=False)
    assert encoder.delta(Delta("", 2)) == b""
    assert encoder.completion_tokens == 2


def test_failed_stream_ends_with_usage_so_far_then_the_error() -> None:
    encoder = ChatStreamEncoder(request_id="r", model="demo", created=1, include_usage=True)
    encode(encoder, EVENTS[:2])
    payloads = frames(encoder.fail(UpstreamFailed("node lost"), prompt_tokens=7))
    usage = ChatCompletionChunk.model_validate_json(payloads[0]).usage
    assert usage is not None and (usage.prompt_tokens, usage.completion_tokens) == (7, 2)
    assert json.loads(payloads[1]) == UpstreamFailed("node lost").body()


# --- end to end through the official client -----------------------------------------------------


def fake_gateway(request: httpx2.Request, events: list[GenerateEvent]) -> httpx2.Response:
    """What the gateway does with these pieces, minus routing: parse, generate, shape."""
    try:
        if request.url.path == "/v1/models":
            return httpx2.Response(200, content=dumps(model_list([model_card("demo", created=1)])))
        req: AnyRequest = (
            parse_request(ChatCompletionRequest, request.content)
            if "chat" in request.url.path
            else parse_request(CompletionRequest, request.content)
        )
        to_generate_request(req, "r1")
        is_chat = isinstance(req, ChatCompletionRequest)
        if req.stream:
            encoder_type = ChatStreamEncoder if is_chat else CompletionStreamEncoder
            encoder = encoder_type(
                request_id="r1", model=req.model, created=1, include_usage=req.include_usage
            )
            return httpx2.Response(
                200, headers={"content-type": "text/event-stream"}, content=encode(encoder, events)
            )
        build = chat_completion if is_chat else text_completion
        assert isinstance(events[-1], Finished)
        body = build(
            request_id="r1", model=req.model, created=1, choices=gathered(TEXT, events[-1])
        )
        return httpx2.Response(200, content=dumps(body))
    except ApiError as error:
        return httpx2.Response(error.status, headers=error.headers(), content=dumps(error.body()))


@contextmanager
def client(
    handler: Callable[[httpx2.Request], httpx2.Response], *, strict: bool = True, retries: int = 0
) -> Iterator[openai.OpenAI]:
    with httpx2.Client(transport=httpx2.MockTransport(handler)) as http:
        yield openai.OpenAI(
            api_key="k",
            base_url="http://head.test/v1",
            http_client=http,
            max_retries=retries,
            _strict_response_validation=strict,
        )


def gateway(events: list[GenerateEvent] = EVENTS) -> Callable[[httpx2.Request], httpx2.Response]:
    return lambda request: fake_gateway(request, events)


def test_client_request_body_parses_and_response_validates() -> None:
    with client(gateway()) as api:
        result = api.chat.completions.create(
            model="demo",
            max_completion_tokens=5,
            temperature=0.2,
            top_p=0.9,
            stop=["x"],
            seed=1,
            user="ana",
            presence_penalty=0.1,
            n=1,
            messages=[
                {"role": "system", "content": "be brief"},
                {"role": "user", "content": [{"type": "text", "text": "hi"}]},
            ],
        )
    assert result.choices[0].message.content == TEXT


def test_client_streams_chat_with_usage() -> None:
    with client(gateway()) as api:
        chunks = list(
            api.chat.completions.create(
                model="demo", messages=USER, stream=True, stream_options={"include_usage": True}
            )
        )
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == TEXT
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 4


def test_client_streams_and_completes_text() -> None:
    # Not strict: the SDK's Completion type rejects the null finish_reason OpenAI itself streams.
    with client(gateway(), strict=False) as api:
        chunks = list(api.completions.create(model="demo", prompt="Once", stream=True))
        whole = api.completions.create(model="demo", prompt=["Once"])
    assert "".join(c.choices[0].text for c in chunks) == TEXT
    assert whole.choices[0].text == TEXT


def test_client_lists_models() -> None:
    with client(gateway()) as api:
        assert [m.id for m in api.models.list()] == ["demo"]


def test_client_raises_on_in_stream_error() -> None:
    def failing(request: httpx2.Request) -> httpx2.Response:
        encoder = ChatStreamEncoder(request_id="r", model="demo", created=1, include_usage=False)
        body = encoder.delta(Delta("par", 1)) + encoder.fail(UpstreamFailed("node lost"))
        return httpx2.Response(200, headers={"content-type": "text/event-stream"}, content=body)

    with client(failing) as api:
        stream = api.chat.completions.create(model="demo", messages=USER, stream=True)
        first = next(iter(stream))
        with pytest.raises(openai.APIError, match="node lost"):
            list(stream)
    assert first.choices[0].delta.role == "assistant"


@pytest.mark.parametrize(
    ("error", "exception"),
    [
        (InvalidRequest("bad", param="top_p"), openai.BadRequestError),
        (Unauthorized("no key"), openai.AuthenticationError),
        (Forbidden("no"), openai.PermissionDeniedError),
        (ModelNotFound("no such model"), openai.NotFoundError),
        (RateLimited("slow", retry_after=1), openai.RateLimitError),
        (UpstreamFailed("boom"), openai.InternalServerError),
        (NoCapacity("full", retry_after=1), openai.InternalServerError),
        (UpstreamTimeout("slow"), openai.InternalServerError),
    ],
)
def test_client_raises_the_matching_exception(
    error: ApiError, exception: type[openai.APIStatusError]
) -> None:
    def refuse(request: httpx2.Request) -> httpx2.Response:
        return httpx2.Response(error.status, headers=error.headers(), content=dumps(error.body()))

    with client(refuse) as api, pytest.raises(exception) as info:
        api.chat.completions.create(model="demo", messages=USER)
    assert info.value.status_code == error.status
    assert (info.value.code, info.value.param, info.value.type) == (
        error.code,
        error.param,
        error.error_type,
    )


def test_client_sees_validation_errors_with_param() -> None:
    with client(gateway()) as api, pytest.raises(openai.BadRequestError) as info:
        api.chat.completions.create(model="demo", messages=USER, n=9)
    assert info.value.param == "n"


def test_client_retries_after_no_capacity() -> None:
    calls: list[int] = []

    def busy_once(request: httpx2.Request) -> httpx2.Response:
        calls.append(1)
        if len(calls) == 1:
            error = NoCapacity("full", retry_after=0.01)
            return httpx2.Response(503, headers=error.headers(), content=dumps(error.body()))
        return fake_gateway(request, EVENTS)

    with client(busy_once, retries=1) as api:
        result = api.chat.completions.create(model="demo", messages=USER)
    assert len(calls) == 2 and result.choices[0].message.content == TEXT
