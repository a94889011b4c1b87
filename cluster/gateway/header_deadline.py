"""A deadline for a request's headers at the endpoint's HTTP server (slowloris on headers).

Serve answers HTTP with uvicorn, which gives a connection no deadline before its headers are
complete: its keep-alive timer starts only after a response, and any byte received cancels it.
A client trickling its headers a byte a second holds its connection, and a file descriptor of
the server's, for as long as it likes; enough of them and nobody else can connect. The body has
its own deadline in front.py, read once the headers are in.

Serve builds uvicorn's Config itself and offers no setting for this, but it calls
RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH in every process that serves HTTP (its proxy, and a
replica under direct ingress) before its server starts: `install` there makes uvicorn's
"auto" protocol (httptools, what Serve gets) one that closes a connection whose headers are
not all in within HEADER_TIMEOUT_S of its first byte (or of its opening), after a 408.
"""

from __future__ import annotations

import asyncio
import json
import logging

import uvicorn.protocols.http.auto
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

logger = logging.getLogger(__name__)

HEADER_TIMEOUT_S = 10.0  # a real client's headers come in one packet; nginx allows 60
CALLBACK = "cluster.gateway.header_deadline:install"  # for RAY_SERVE_HTTP_PROXY_CALLBACK_...
# Before its headers the dialect is unknown: OpenAI's error shape, as front.py's 408 has.
_BODY = json.dumps(
    {
        "error": {
            "message": f"The request's headers did not arrive within {HEADER_TIMEOUT_S:g}s.",
            "type": "invalid_request_error",
            "code": "request_timeout",
        }
    }
).encode()
TIMED_OUT = (
    b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\n"
    b"content-length: %d\r\nconnection: close\r\n\r\n%s" % (len(_BODY), _BODY)
)


class HeaderDeadlineProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, with a deadline for each request's headers."""

    header_timeout_s = HEADER_TIMEOUT_S
    _header_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        """A new connection: its first request's headers are due from now."""
        super().connection_made(transport)
        self._arm()

    def data_received(self, data: bytes) -> None:
        """Bytes of a request: the first of a next request's (none is being answered) arm the
        deadline; the body of one being answered is front.py's to time."""
        if self.cycle is None or self.cycle.response_complete:
            self._arm()
        super().data_received(data)

    def on_headers_complete(self) -> None:
        """The headers are in: the deadline is met."""
        self._disarm()
        super().on_headers_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        """The connection closed, by either side."""
        self._disarm()
        super().connection_lost(exc)

    def _arm(self) -> None:
        if self._header_timer is None:
            self._header_timer = self.loop.call_later(self.header_timeout_s, self._timed_out)

    def _disarm(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _timed_out(self) -> None:
        self._header_timer = None
        if not self.transport.is_closing():
            self.transport.write(TIMED_OUT)
            self.transport.close()


def install() -> list[object]:
    """Make the headers' deadline uvicorn's "auto" HTTP protocol in this process; no Serve
    middlewares (Serve calls this as its proxy callback and adds what it returns)."""
    uvicorn.protocols.http.auto.AutoHTTPProtocol = HeaderDeadlineProtocol
    logger.info("request headers are due within %gs of a connection's first byte", HEADER_TIMEOUT_S)
    return []
