"""A minimal keep-alive HTTP/1.1 client for the benchmarks, shaped like the part of httpx they use.

The benchmarks run the client on the same two cores as the cluster it measures, so the client's
own CPU is taken from the gateway. On a 2-core machine, a 16-token streamed chat completion cost
httpx about 7 ms more CPU than this client (and a trivial stream about 1 ms more latency), so
that what a benchmark reports is closer to what the gateway costs, not the load generator. It
speaks only what the endpoint answers: plain HTTP/1.1 on loopback, Content-Length or chunked
bodies, no TLS, no redirects, no compression.

    async with LeanClient(connections=32, timeout=120) as http:
        r = await http.post(f"{url}/v1/chat/completions", json=body)
        async with http.stream("POST", f"{url}/v1/chat/completions", json=body) as s:
            async for line in s.aiter_lines(): ...
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit


@dataclass
class Connection:
    """One open connection to `host` ("name:port")."""

    host: str
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    reused: bool = False


class LeanResponse:
    """A response whose body is read on demand from its connection."""

    def __init__(
        self, client: LeanClient, conn: Connection, status: int, headers: dict[str, str]
    ) -> None:
        self.status_code = status
        self.headers = headers
        self._client, self._conn = client, conn
        self._chunked = headers.get("transfer-encoding", "").lower() == "chunked"
        self._left = int(headers.get("content-length", "0"))
        self._done = not self._chunked and self._left == 0
        self.content = b""

    async def aiter_bytes(self) -> AsyncIterator[bytes]:
        """The body as it arrives; the connection goes back to the pool at its end."""
        reader = self._conn.reader
        while not self._done:
            if self._chunked:
                size = int((await reader.readline()).split(b";", 1)[0], 16)
                data = await reader.readexactly(size + 2)  # the chunk and its CRLF
                if size == 0:
                    self._finish()
                    return
                yield data[:-2]
            else:
                data = await reader.read(self._left)
                if not data:
                    raise ConnectionError("the server closed the connection mid-body")
                self._left -= len(data)
                if self._left == 0:
                    self._finish()
                yield data

    async def aiter_lines(self) -> AsyncIterator[str]:
        """The body line by line, without line endings (for server-sent events)."""
        pending = b""
        async for data in self.aiter_bytes():
            pending += data
            *lines, pending = pending.split(b"\n")
            for line in lines:
                yield line.rstrip(b"\r").decode()
        if pending:
            yield pending.rstrip(b"\r").decode()

    async def aread(self) -> bytes:
        """The whole body."""
        self.content = b"".join([part async for part in self.aiter_bytes()])
        return self.content

    @property
    def text(self) -> str:
        """The body read so far, as text."""
        return self.content.decode(errors="replace")

    def json(self) -> Any:
        """The body read so far, parsed."""
        return json.loads(self.content)

    def _finish(self) -> None:
        self._done = True
        if self.headers.get("connection", "").lower() == "close":
            self._conn.writer.close()
            self._client.release(None)
        else:
            self._client.release(self._conn)

    def close(self) -> None:
        """Drop a connection whose body was not read to the end: it cannot be reused."""
        if not self._done:
            self._done = True
            self._conn.writer.close()


class LeanClient:
    """Keep-alive connections per host, up to `connections` open at once to each."""

    def __init__(
        self,
        *,
        connections: int = 100,
        timeout: float = 120.0,
        base_url: str = "",
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self.timeout = timeout
        self.base_url = base_url.rstrip("/")
        self.headers = dict(headers or {})
        self._idle: dict[str, list[Connection]] = {}
        self._slots = asyncio.Semaphore(connections)

    async def __aenter__(self) -> LeanClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close every idle connection."""
        for conns in self._idle.values():
            for conn in conns:
                conn.writer.close()
        self._idle.clear()

    def release(self, conn: Connection | None) -> None:
        """A response read to its end: its slot is free, and its connection (if any) reusable."""
        if conn is not None:
            conn.reused = True
            self._idle.setdefault(conn.host, []).append(conn)
        self._slots.release()

    async def post(
        self, url: str, *, json: Any = None, headers: Mapping[str, str] | None = None
    ) -> LeanResponse:
        """POST and read the whole answer."""
        async with self.stream("POST", url, json=json, headers=headers) as r:
            await r.aread()
        return r

    async def get(self, url: str, *, headers: Mapping[str, str] | None = None) -> LeanResponse:
        """GET and read the whole answer."""
        async with self.stream("GET", url, headers=headers) as r:
            await r.aread()
        return r

    @contextlib.asynccontextmanager
    async def stream(
        self, method: str, url: str, *, json: Any = None, headers: Mapping[str, str] | None = None
    ) -> AsyncIterator[LeanResponse]:
        """Send a request; the response's body is read inside the block."""
        parts = urlsplit(url if "://" in url else self.base_url + url)
        host = parts.netloc
        body = b"" if json is None else _dumps(json)
        head = [
            f"{method} {parts.path or '/'}{'?' + parts.query if parts.query else ''} HTTP/1.1",
            f"host: {host}",
            f"content-length: {len(body)}",
        ]
        if json is not None:
            head.append("content-type: application/json")
        head += [f"{k}: {v}" for k, v in {**self.headers, **(headers or {})}.items()]
        request = ("\r\n".join(head) + "\r\n\r\n").encode() + body
        async with asyncio.timeout(self.timeout):
            await self._slots.acquire()
            response: LeanResponse | None = None
            try:
                conn = await self._send(host, parts.hostname or "", parts.port or 80, request)
                try:
                    response = await _read_head(self, conn)
                except ConnectionError:
                    if not conn.reused:
                        raise
                    # The server closed it while it sat idle: once more on a fresh one.
                    conn = await self._send(
                        host, parts.hostname or "", parts.port or 80, request, fresh=True
                    )
                    response = await _read_head(self, conn)
                yield response
            finally:
                if response is None or not response._done:
                    if response is not None:
                        response.close()
                    self._slots.release()

    async def _send(
        self, host: str, hostname: str, port: int, request: bytes, *, fresh: bool = False
    ) -> Connection:
        """Write the request on an idle connection, else on a new one."""
        idle = [] if fresh else self._idle.get(host, [])
        while idle:
            conn = idle.pop()
            if conn.reader.at_eof() or conn.writer.is_closing():
                conn.writer.close()
                continue
            conn.writer.write(request)
            return conn
        reader, writer = await asyncio.open_connection(hostname, port)
        conn = Connection(host, reader, writer)
        writer.write(request)
        return conn


async def _read_head(client: LeanClient, conn: Connection) -> LeanResponse:
    """The status line and headers (names lowercased)."""
    status_line = await conn.reader.readline()
    if not status_line:
        conn.writer.close()
        raise ConnectionError("the server closed the connection before answering")
    headers = {}
    while (line := await conn.reader.readline()) not in (b"\r\n", b"\n", b""):
        name, _, value = line.decode("latin-1").partition(":")
        headers[name.strip().lower()] = value.strip()
    return LeanResponse(client, conn, int(status_line.split()[1]), headers)


def _dumps(body: Any) -> bytes:
    return json.dumps(body, separators=(",", ":")).encode()
