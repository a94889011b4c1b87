"""The two completion endpoints, answered in front of FastAPI.

Every completion request used to go through FastAPI's exception, routing, request-response and
dependency layers to reach a method that reads the body itself; on a small head that was a large
part of what the gateway added to the time to first token. `HotPath` answers these two routes
itself, with the replica's own methods and the gateway's error handlers; every other request
goes on to FastAPI. FastAPI does not know the two routes, so a replica that failed to register
answers 503 instead of silently taking the slow way.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
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


def route_path(scope: Any) -> str:
    """The request's path below the app's root path, as FastAPI's router matches it."""
    path, root = scope.get("path", ""), scope.get("root_path", "")
    return path[len(root) :] if root and path.startswith(root) else path
