"""The two completion endpoints, answered in front of FastAPI.

`Front` is the replica's ASGI app (Gateway.__serve_build_asgi_app__): it answers the two
completion routes itself, with the replica's own methods and the gateway's error handlers, and
hands every other request to FastAPI. Inside FastAPI, each completion paid for its exception,
routing and body layers, and for Serve matching the request against every route to name it
for metrics: some 70 us a request, about a tenth of a short request's CPU (bench/RESULTS.md).

The front is also the endpoint's intake: a request is let in on its headers (the API key)
before a byte of its body is read, and the body is read here, capped in size and in time, so
that no client without a key, and no client with one, can hold the replica's one event loop or
its memory with a body that is huge or never ends.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from cluster.errors import (
    ApiError,
    MethodNotAllowed,
    NoCapacity,
    PayloadTooLarge,
    RequestTimeout,
)

ROUTES = {
    "/v1/chat/completions": "chat_completions",
    "/v1/completions": "completions",
    "/v1/messages": "messages",
    "/v1/messages/count_tokens": "count_tokens",
    "/v1/responses": "responses",
    "/v1/embeddings": "embeddings",
}
ErrorHandler = Callable[[Request, Any], Awaitable[Response]]
MIB = 2**20


@dataclass(frozen=True, kw_only=True)
class IntakeLimits:
    """What the front takes in: how much of a body, for how long, and how many at once."""

    max_bytes: int = 8 * MIB
    read_timeout_s: float = 30.0
    # Completion requests at once, bodies being read included; past it a 503 with Retry-After,
    # so a flood is refused in the dialect's shape instead of queueing without bound.
    max_requests: int = 1_000


DEFAULT_LIMITS = IntakeLimits()


class Front:
    """ASGI app: POST on the completion routes to `replica`'s methods of the same name, each let
    in by `admit` on its headers and its body read within `limits`, up to `limits.max_requests`
    at once; everything else (other routes, lifespan) to `app`."""

    def __init__(
        self,
        app: Any,
        *,
        replica: Any,
        on_api_error: ErrorHandler,
        on_unexpected: ErrorHandler,
        admit: Callable[[Request], object] = lambda request: None,  # raises to refuse
        limits: IntakeLimits = DEFAULT_LIMITS,
    ) -> None:
        self.app = app
        self.on_api_error, self.on_unexpected = on_api_error, on_unexpected
        self.admit, self.limits = admit, limits
        self._routes = {path: getattr(replica, name) for path, name in ROUTES.items()}
        self.pending = 0  # completion requests being answered

    def add_exception_handler(self, exc_class: Any, handler: Any) -> None:
        """Serve registers its own errors (backpressure: 503) on the app it is given."""
        self.app.add_exception_handler(exc_class, handler)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        answer = self._routes.get(route_path(scope)) if scope["type"] == "http" else None
        if answer is None:
            await self.app(scope, receive, send)
            return
        self.pending += 1
        try:
            response = await self._respond(answer, scope, receive)
            if response is not None:
                await response(scope, receive, send)
        finally:
            self.pending -= 1

    async def _respond(self, answer: Any, scope: Any, receive: Any) -> Any:
        """The answer to a completion request (an ASGI response: the replica streams some as
        EventStream); None for a client gone before its body ended."""
        request = Request(scope, receive)
        body: bytes | None = None
        try:
            if scope["method"] != "POST":
                raise MethodNotAllowed(f"{scope['method']} is not allowed here; use POST")
            if self.pending > self.limits.max_requests:
                raise NoCapacity("The gateway is answering all it can; retry.", retry_after=1)
            self.admit(request)  # 401 on the headers alone
            body = await read_body(scope, receive, self.limits)
            response = await answer(Request(scope, _replay(body)))
        except ClientGone:
            return None  # no one to answer
        except ApiError as exc:
            response = await self.on_api_error(request, exc)
        except Exception as exc:
            response = await self.on_unexpected(request, exc)
        if body is None:  # answered before its body was read: the rest of it is not awaited
            response.headers["connection"] = "close"
        return response


class EventStream:
    """A server-sent event stream as a bare ASGI response: the headers, then each frame.

    Starlette's StreamingResponse runs the body in a task group beside a second task that
    listens for the client leaving; that costs two tasks and an event loop turn before the first
    byte, on every request. Serve already watches the connection (its replica, or its proxy,
    cancels the request's task when the client goes away), so this sends straight from the
    request's own task; the cancellation reaches the frames' generator, whose `finally` cancels
    the generation on the node, and `aclose` here covers every other way out.
    """

    def __init__(self, frames: AsyncIterator[bytes], headers: Mapping[str, str]) -> None:
        self.frames = frames
        self.raw_headers = [
            (b"content-type", b"text/event-stream; charset=utf-8"),
            (b"cache-control", b"no-cache"),
            *((k.encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()),
        ]

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        frames = self.frames
        try:
            await send({"type": "http.response.start", "status": 200, "headers": self.raw_headers})
            async for frame in frames:
                await send({"type": "http.response.body", "body": frame, "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            await frames.aclose()  # type: ignore[attr-defined]


class ClientGone(Exception):
    """The client closed its connection before its body was complete."""


async def read_body(scope: Any, receive: Any, limits: IntakeLimits) -> bytes:
    """The request's body: 413 past `limits.max_bytes` (at once when its Content-Length says
    so), 408 when it has not all arrived within `limits.read_timeout_s`."""
    if _declared_length(scope) > limits.max_bytes:
        raise _too_large(limits)
    try:
        async with asyncio.timeout(limits.read_timeout_s):
            return await _receive_body(receive, limits)
    except TimeoutError:
        raise RequestTimeout(
            f"The request body did not arrive within {limits.read_timeout_s:g} s."
        ) from None


async def _receive_body(receive: Any, limits: IntakeLimits) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientGone
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limits.max_bytes:
            raise _too_large(limits)
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


def _declared_length(scope: Any) -> int:
    """The body's Content-Length, 0 when absent or malformed (the read still counts bytes)."""
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            return int(value) if value.isdigit() else 0
    return 0


def _too_large(limits: IntakeLimits) -> PayloadTooLarge:
    return PayloadTooLarge(
        f"The request body is larger than this endpoint accepts "
        f"({limits.max_bytes / MIB:g} MiB; `cluster up --max-body-mib` sets it)."
    )


def _replay(body: bytes) -> Callable[[], Awaitable[dict[str, Any]]]:
    """A `receive` that hands the replica the body already read, as one message."""

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": body, "more_body": False}

    return receive


def route_path(scope: Any) -> str:
    """The request's path below the app's root path, as FastAPI's router matches it."""
    path: str = scope.get("path", "")
    root: str = scope.get("root_path", "")
    return path[len(root) :] if root and path.startswith(root) else path
