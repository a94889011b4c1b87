"""The replica's ASGI front: the two completion routes to the replica, the rest to FastAPI, and
server-sent events sent from the request's own task."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from cluster.errors import ApiError, NotFound, Unauthorized
from cluster.gateway.front import EventStream, Front, IntakeLimits


class Replica:
    """Answers the completion routes the way the test says."""

    def __init__(self, fail: Exception | None = None) -> None:
        self.fail = fail
        self.seen: list[tuple[str, bytes]] = []

    async def chat_completions(self, request: Request) -> Response:
        return await self._answer("chat", request)

    async def completions(self, request: Request) -> Response:
        return await self._answer("completions", request)

    async def messages(self, request: Request) -> Response:
        return await self._answer("messages", request)

    async def count_tokens(self, request: Request) -> Response:
        return await self._answer("count_tokens", request)

    async def responses(self, request: Request) -> Response:
        return await self._answer("responses", request)

    async def embeddings(self, request: Request) -> Response:
        return await self._answer("embeddings", request)

    async def _answer(self, name: str, request: Request) -> Response:
        self.seen.append((name, await request.body()))
        if self.fail is not None:
            raise self.fail
        return Response(name.encode(), media_type="text/plain")


class Inner:
    """The app behind the front (FastAPI in a replica): records what reached it."""

    def __init__(self) -> None:
        self.scopes: list[dict[str, Any]] = []
        self.handlers: list[tuple[Any, Any]] = []

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        self.scopes.append(scope)
        if scope["type"] == "http":
            await Response(b"inner", status_code=200)(scope, receive, send)

    def add_exception_handler(self, exc_class: Any, handler: Any) -> None:
        self.handlers.append((exc_class, handler))


async def _api_error(request: Request, exc: ApiError) -> Response:
    return JSONResponse(exc.body(), status_code=exc.status, headers=exc.headers())


async def _unexpected(request: Request, exc: Exception) -> Response:
    return JSONResponse({"error": {"message": "internal"}}, status_code=500)


def _front(replica: Replica, inner: Inner, **intake: Any) -> Front:
    return Front(
        inner, replica=replica, on_api_error=_api_error, on_unexpected=_unexpected, **intake
    )


async def _call(
    app: Any,
    path: str,
    method: str = "POST",
    body: bytes = b"{}",
    root_path: str = "",
    messages: list[dict[str, Any]] | None = None,
    headers: list[tuple[bytes, bytes]] | None = None,
    sent: list[dict[str, Any]] | None = None,
) -> tuple[int, bytes]:
    """Call `app`; the body arrives as `messages` when given (then, nothing more ever comes)."""
    scope = {
        "type": "http",
        "method": method,
        "path": path,
        "root_path": root_path,
        "headers": headers or [],
        "query_string": b"",
        "http_version": "1.1",
        "scheme": "http",
        "server": ("127.0.0.1", 8000),
        "client": ("127.0.0.1", 5000),
    }
    sent = [] if sent is None else sent
    queue = list(messages or [{"type": "http.request", "body": body, "more_body": False}])

    async def receive() -> dict[str, Any]:
        if not queue:
            await asyncio.Event().wait()  # a client that stopped sending
        return queue.pop(0)

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app(scope, receive, send)
    status = next(m["status"] for m in sent if m["type"] == "http.response.start")
    return status, b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")


async def test_the_completion_routes_go_to_the_replica_and_nothing_else() -> None:
    replica, inner = Replica(), Inner()
    front = _front(replica, inner)
    assert await _call(front, "/v1/chat/completions", body=b'{"a": 1}') == (200, b"chat")
    assert await _call(front, "/v1/completions") == (200, b"completions")
    assert replica.seen == [("chat", b'{"a": 1}'), ("completions", b"{}")]
    assert inner.scopes == []
    assert await _call(front, "/v1/models", method="GET") == (200, b"inner")
    assert await _call(front, "/v1/chat/completions/extra") == (200, b"inner")
    assert [s["path"] for s in inner.scopes] == ["/v1/models", "/v1/chat/completions/extra"]


async def test_a_root_path_is_taken_off_before_matching() -> None:
    replica = Replica()
    front = _front(replica, Inner())
    status, _ = await _call(front, "/llm/v1/completions", root_path="/llm")
    assert status == 200 and replica.seen == [("completions", b"{}")]


async def test_another_method_on_a_completion_route_is_a_405_from_the_front() -> None:
    replica, inner = Replica(), Inner()
    status, body = await _call(_front(replica, inner), "/v1/chat/completions", method="GET")
    assert status == 405 and b"use POST" in body
    assert replica.seen == [] and inner.scopes == []


async def test_errors_become_the_gateway_s_answers() -> None:
    status, body = await _call(
        _front(Replica(NotFound("no such model")), Inner()), "/v1/completions"
    )
    assert status == 404 and b"no such model" in body
    status, body = await _call(_front(Replica(RuntimeError("bug")), Inner()), "/v1/completions")
    assert (status, body) == (500, b'{"error":{"message":"internal"}}')


async def test_lifespan_and_exception_handlers_reach_the_inner_app() -> None:
    inner = Inner()
    front = _front(Replica(), inner)

    async def receive() -> dict[str, Any]:
        return {"type": "lifespan.startup"}

    async def send(message: dict[str, Any]) -> None:
        pass

    await front({"type": "lifespan"}, receive, send)
    handler = object()
    front.add_exception_handler(TimeoutError, handler)
    assert [s["type"] for s in inner.scopes] == ["lifespan"]
    assert inner.handlers == [(TimeoutError, handler)]


async def test_an_event_stream_sends_every_frame_then_ends_the_body() -> None:
    async def frames() -> AsyncIterator[bytes]:
        yield b"data: 1\n\n"
        yield b"data: 2\n\n"

    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await EventStream(frames(), {"x-meterless-node": "n1"})({}, None, send)
    start = sent[0]
    assert start["status"] == 200
    assert (b"content-type", b"text/event-stream; charset=utf-8") in start["headers"]
    assert (b"x-meterless-node", b"n1") in start["headers"]
    assert [m["body"] for m in sent[1:]] == [b"data: 1\n\n", b"data: 2\n\n", b""]
    assert [m["more_body"] for m in sent[1:]] == [True, True, False]


async def test_an_event_stream_closes_its_frames_when_the_client_is_gone() -> None:
    closed = []

    async def frames() -> AsyncIterator[bytes]:
        try:
            while True:
                yield b"data: x\n\n"
        finally:
            closed.append(True)  # where the gateway cancels the generation on the node

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.body":
            raise OSError("the client went away")

    with pytest.raises(OSError):
        await EventStream(frames(), {})({}, None, send)
    assert closed == [True]


def _chunks(*parts: bytes, more: bool = False) -> list[dict[str, Any]]:
    """The body as ASGI messages; `more`: the last does not end it."""
    return [
        {"type": "http.request", "body": p, "more_body": more or i < len(parts) - 1}
        for i, p in enumerate(parts)
    ]


async def test_a_body_in_pieces_reaches_the_replica_whole() -> None:
    replica = Replica()
    front = _front(replica, Inner())
    sent: list[dict[str, Any]] = []
    parts = _chunks(b'{"a"', b": 1", b"}")
    status, _ = await _call(front, "/v1/completions", messages=parts, sent=sent)
    assert status == 200 and replica.seen == [("completions", b'{"a": 1}')]
    assert (b"connection", b"close") not in sent[0]["headers"]  # kept alive


async def test_a_request_is_refused_on_its_headers_before_its_body_is_read() -> None:
    replica = Replica()

    def admit(request: Request) -> None:
        if request.headers.get("authorization") != "Bearer good":
            raise Unauthorized("bad key")

    front = _front(replica, Inner(), admit=admit)
    # The body never arrives: only a front that did not wait for it answers at all.
    sent: list[dict[str, Any]] = []
    status, body = await _call(
        front, "/v1/chat/completions", messages=_chunks(b"{", more=True), sent=sent
    )
    assert status == 401 and b"bad key" in body and replica.seen == []
    assert (b"connection", b"close") in sent[0]["headers"]  # not left to wait for the body
    good = [(b"authorization", b"Bearer good")]
    assert await _call(front, "/v1/chat/completions", headers=good) == (200, b"chat")


async def test_a_body_over_the_cap_is_a_413_declared_or_not() -> None:
    replica = Replica()
    front = _front(replica, Inner(), limits=IntakeLimits(max_bytes=10))
    declared = [(b"content-length", b"11")]
    status, body = await _call(
        front, "/v1/messages", headers=declared, messages=_chunks(b"{", more=True)
    )
    assert status == 413 and b"request_too_large" in body
    status, _ = await _call(front, "/v1/messages", messages=_chunks(b"123456", b"78901"))
    assert status == 413
    assert await _call(front, "/v1/messages", body=b"1234567890") == (200, b"messages")
    assert replica.seen == [("messages", b"1234567890")]


async def test_a_body_that_stops_arriving_is_a_408() -> None:
    replica = Replica()
    front = _front(replica, Inner(), limits=IntakeLimits(read_timeout_s=0.05))
    status, body = await _call(front, "/v1/responses", messages=_chunks(b'{"mo', more=True))
    assert status == 408 and b"request_timeout" in body and replica.seen == []


async def test_a_client_gone_mid_body_gets_no_answer_and_the_replica_no_call() -> None:
    replica = Replica()
    messages = [*_chunks(b"{", more=True), {"type": "http.disconnect"}]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return messages.pop(0)

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": "/v1/completions", "headers": []}
    await _front(replica, Inner())(scope, receive, send)
    assert sent == [] and replica.seen == []


async def test_requests_past_the_bound_are_a_503_with_retry_after() -> None:
    release = asyncio.Event()

    class Slow(Replica):
        async def _answer(self, name: str, request: Request) -> Response:
            await release.wait()
            return await super()._answer(name, request)

    replica = Slow()
    front = _front(replica, Inner(), limits=IntakeLimits(max_requests=2))
    held = [asyncio.create_task(_call(front, "/v1/completions")) for _ in range(2)]
    await asyncio.sleep(0)
    sent: list[dict[str, Any]] = []
    status, body = await _call(front, "/v1/messages", sent=sent)
    assert status == 503 and b"no_capacity" in body
    assert (b"retry-after", b"1") in sent[0]["headers"]  # as the real handler sends it
    release.set()
    assert [await t for t in held] == [(200, b"completions")] * 2
    assert front.pending == 0
    assert await _call(front, "/v1/messages") == (200, b"messages")
