"""The two completion endpoints, answered in front of FastAPI.

`Front` is the replica's ASGI app (Gateway.__serve_build_asgi_app__): it answers the two
completion routes itself, with the replica's own methods and the gateway's error handlers, and
hands every other request to FastAPI. Inside FastAPI, each completion paid for its exception,
routing and body layers, and for Serve matching the request against every route to name it
for metrics: some 70 us a request, about a tenth of a short request's CPU (bench/RESULTS.md).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from cluster.errors import ApiError, MethodNotAllowed

ROUTES = {
    "/v1/chat/completions": "chat_completions",
    "/v1/completions": "completions",
    "/v1/messages": "messages",
    "/v1/messages/count_tokens": "count_tokens",
    "/v1/responses": "responses",
    "/v1/embeddings": "embeddings",
}
ErrorHandler = Callable[[Request, Any], Awaitable[Response]]


class Front:
    """ASGI app: POST on the two routes to `replica`'s methods of the same name, everything
    else (other routes, lifespan) to `app`."""

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
    path: str = scope.get("path", "")
    root: str = scope.get("root_path", "")
    return path[len(root) :] if root and path.startswith(root) else path
