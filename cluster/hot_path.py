"""The two completion endpoints, answered in front of FastAPI.

Every completion request used to go through FastAPI's exception, routing, request-response and
dependency layers to reach a method that reads the body itself; on a small head that was a large
part of what the gateway added to the time to first token. `HotPath` answers these two routes
itself, with the replica's own methods and the gateway's error handlers; every other request
goes on to FastAPI. FastAPI does not know the two routes, so a replica that failed to register
answers 503 instead of silently taking the slow way.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from cluster.errors import ApiError, MethodNotAllowed, NoCapacity

ROUTES = {"/v1/chat/completions": "chat_completions", "/v1/completions": "completions"}
ErrorHandler = Callable[[Request, Any], Awaitable[Response]]

_replica: Any = None  # this process's gateway replica


def serve(replica: Any) -> None:
    """Let HotPath call `replica`'s `chat_completions` and `completions` (its constructor calls
    this). Serve pickles the decorated gateway class by value, with a copy of the globals its
    methods name, so the replica cannot keep itself in a global of its own module; this module
    is imported, not copied."""
    global _replica
    _replica = replica


class HotPath:
    """ASGI middleware: POST on the two routes to the replica, everything else to `app`."""

    def __init__(
        self, app: Any, *, on_api_error: ErrorHandler, on_unexpected: ErrorHandler
    ) -> None:
        self.app = app
        self.on_api_error, self.on_unexpected = on_api_error, on_unexpected

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        name = ROUTES.get(route_path(scope)) if scope["type"] == "http" else None
        if name is None:
            await self.app(scope, receive, send)
            return
        request = Request(scope, receive)
        try:
            if scope["method"] != "POST":
                raise MethodNotAllowed(f"{scope['method']} is not allowed here; use POST")
            if _replica is None:
                raise NoCapacity("The gateway is starting.", retry_after=1)
            response = await getattr(_replica, name)(request)
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
        self.raw_headers = [(b"content-type", b"text/event-stream; charset=utf-8"),
                            (b"cache-control", b"no-cache"),
                            *((k.encode("latin-1"), v.encode("latin-1"))
                              for k, v in headers.items())]

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        frames = self.frames
        try:
            await send({"type": "http.response.start", "status": 200,
                        "headers": self.raw_headers})
            async for frame in frames:
                await send({"type": "http.response.body", "body": frame, "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            await frames.aclose()  # type: ignore[attr-defined]


def route_path(scope: Any) -> str:
    """The request's path below the app's root path, as FastAPI's router matches it."""
    path, root = scope.get("path", ""), scope.get("root_path", "")
    return path[len(root) :] if root and path.startswith(root) else path
