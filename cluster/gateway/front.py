"""The two completion endpoints, answered in front of FastAPI.

Every completion request used to go through FastAPI's exception, routing, request-response and
dependency layers to reach a method that reads the body itself; on a small head that was a large
part of what the gateway added to the time to first token. `Front` is the replica's ASGI app
(Gateway.__serve_build_asgi_app__): it answers these two routes itself, with the replica's own
methods and the gateway's error handlers, and hands every other request to FastAPI.

It used to be a middleware inside FastAPI. There it still paid for FastAPI's entry and its
error, body-limit and telemetry layers, and, above all, for Serve naming each request's route
for its metrics: given a FastAPI app, Serve's direct ingress matches the request against every
route of the app, twice when none matches, as none does for these two. In a loop that was 70 us
a request (bench/front.py); in one replica under load, switched between the two round by round,
the front outside used 139 and 173 us (8% and 10%) less CPU a request and served 8% and 12% more
one-token completions a second (two runs of bench/ledger.py's windows, 40 rounds each).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from cluster.errors import ApiError, MethodNotAllowed

ROUTES = {"/v1/chat/completions": "chat_completions", "/v1/completions": "completions"}
ErrorHandler = Callable[[Request, Any], Awaitable[Response]]


class Front:
    """ASGI app: POST on the two routes to `replica`'s methods of the same name, everything
    else (other routes, lifespan) to `app`. It also works as a middleware inside `app`, which
    is how bench/front.py times what the outside saves."""

    def __init__(
        self, app: Any, *, replica: Any, on_api_error: ErrorHandler, on_unexpected: ErrorHandler
    ) -> None:
        self.app = app
        self.on_api_error, self.on_unexpected = on_api_error, on_unexpected
        self._routes = {path: getattr(replica, name) for path, name in ROUTES.items()}

    def add_exception_handler(self, exc_class: Any, handler: Any) -> None:
        """Serve registers its own errors (backpressure: 503) on the app it is given."""
        self.app.add_exception_handler(exc_class, handler)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        answer = self._routes.get(route_path(scope)) if scope["type"] == "http" else None
        if answer is None:
            await self.app(scope, receive, send)
            return
        request = Request(scope, receive)
        try:
            if scope["method"] != "POST":
                raise MethodNotAllowed(f"{scope['method']} is not allowed here; use POST")
            response = await answer(request)
        except ApiError as exc:
            response = await self.on_api_error(request, exc)
        except Exception as exc:
            response = await self.on_unexpected(request, exc)
        await response(scope, receive, send)


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


def route_path(scope: Any) -> str:
    """The request's path below the app's root path, as FastAPI's router matches it."""
    path, root = scope.get("path", ""), scope.get("root_path", "")
    return path[len(root) :] if root and path.startswith(root) else path
