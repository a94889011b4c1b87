"""What answering the completion routes in front of FastAPI saves, timed in one loop.

    .venv/bin/python bench/front.py [--requests 20000] [--tokens 16] [--repeats 5]

The same `Front` (cluster/gateway/front.py) answering the same request in two places, alternated:
- `front`: as the replica's ASGI app, what a gateway replica runs;
- `inside`: as a middleware inside the gateway's FastAPI app, what it ran before, together with
  the route lookup that Serve's direct ingress does on every request to a FastAPI app (it names
  the request's route for its metrics by matching the app's routes, twice when none matches,
  as for the two completion routes, which FastAPI does not know).

The replica behind both answers at once, with one small JSON body (`one`) or with a stream of
`--tokens` server-sent events (`stream`), so what is timed is the way in and out, not the work.
A loop keeps everything in the CPU's caches: inside a replica, among other processes, the same
difference was about ten times larger (see the module docstring of cluster/gateway/front.py).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ray.serve._private.thirdparty.get_asgi_route_name import get_asgi_route_name
from starlette.requests import Request
from starlette.responses import Response

from cluster.gateway.front import EventStream, Front
from cluster.gateway.replica import _api_error, _unexpected, api

SCOPE = {
    "type": "http",
    "method": "POST",
    "path": "/v1/chat/completions",
    "root_path": "",
    "headers": [(b"host", b"127.0.0.1:8000"), (b"content-type", b"application/json")],
    "query_string": b"",
    "http_version": "1.1",
    "scheme": "http",
    "server": ("127.0.0.1", 8000),
    "client": ("127.0.0.1", 50000),
}


class Replica:
    """Answers at once: one JSON body, or `tokens` events."""

    def __init__(self, tokens: int) -> None:
        self.tokens, self.stream = tokens, False

    async def chat_completions(self, request: Request) -> Response | EventStream:
        await request.body()
        if not self.stream:
            return Response(b'{"id": "x"}', media_type="application/json")
        return EventStream(self._frames(), {"x-meterless-node": "n"})

    async def _frames(self) -> AsyncIterator[bytes]:
        for _ in range(self.tokens):
            yield b'data: {"choices": []}\n\n'

    completions = chat_completions


async def _receive() -> dict[str, Any]:
    return {"type": "http.request", "body": b'{"model": "demo"}', "more_body": False}


async def _send(message: dict[str, Any]) -> None:
    pass


def serve_inside(app: Any) -> Any:
    """What Serve ran per request before: name the route on the FastAPI app, then call it."""

    async def call(scope: Any, receive: Any, send: Any) -> None:
        get_asgi_route_name(app, scope)
        await app(scope, receive, send)

    return call


async def per_request_us(app: Any, n: int) -> float:
    started = time.perf_counter()
    for _ in range(n):
        await app(dict(SCOPE), _receive, _send)
    return (time.perf_counter() - started) / n * 1e6


async def run(args: argparse.Namespace) -> None:
    replica = Replica(args.tokens)
    handlers = {"replica": replica, "on_api_error": _api_error, "on_unexpected": _unexpected}
    api.add_middleware(Front, **handlers)
    ways = {"front": Front(api, **handlers), "inside": serve_inside(api)}
    print(
        f"{args.repeats} alternated repeats of {args.requests} requests each; median us per request"
    )
    print(f"{'answer':<10} {'front':>8} {'inside':>8} {'saved':>8} {'inside/front':>13}")
    for stream in (False, True):
        replica.stream = stream
        n = args.requests // args.tokens if stream else args.requests
        times: dict[str, list[float]] = {way: [] for way in ways}
        for app in ways.values():
            await per_request_us(app, n // 10)  # warm-up
        for _ in range(args.repeats):
            for way, app in ways.items():
                times[way].append(await per_request_us(app, n))
        front, inside = (statistics.median(times[w]) for w in ways)
        label = f"{args.tokens} events" if stream else "one body"
        print(
            f"{label:<10} {front:8.1f} {inside:8.1f} {inside - front:8.1f} {inside / front:13.2f}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--tokens", type=int, default=16, help="events in a streamed answer")
    parser.add_argument("--repeats", type=int, default=5)
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
