"""The official `anthropic` SDK talking to canned bytes: what a client makes of our encoding."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import anthropic
import httpx2

HEADERS = {
    "event-stream": {"content-type": "text/event-stream"},
    "json": {"content-type": "application/json"},
}


@contextmanager
def client(
    body: bytes, kind: str = "event-stream", status: int = 200, sent: list[bytes] | None = None
) -> Iterator[anthropic.Anthropic]:
    """A client whose every request is answered with `body`; `sent` collects the requests'."""

    def answer(request: httpx2.Request) -> httpx2.Response:
        if sent is not None:
            sent.append(request.read())
        return httpx2.Response(status, headers=HEADERS[kind], content=body)

    with httpx2.Client(transport=httpx2.MockTransport(answer)) as http:
        yield anthropic.Anthropic(
            api_key="k", base_url="http://head.test", http_client=http, max_retries=0
        )
