"""The benchmarks' lean HTTP client against a real socket server: bodies, keep-alive, staleness."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from bench.lean_http import LeanClient

PIECES = (b"data: {}\n", b'data: {"a":1}\n\ndat', b"a: [DONE]\n\n")  # lines split across chunks
CHUNKED = (
    b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n"
    b"x-meterless-node: n1\r\n\r\n"
    + b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in PIECES)
    + b"0\r\n\r\n"
)
SIZED = b'HTTP/1.1 200 OK\r\ncontent-length: 11\r\n\r\n{"ok":true}'


async def _serve(answers: list[bytes], close_after: int) -> tuple[asyncio.Server, list[int]]:
    """A server answering each request with the next of `answers`; it closes each connection
    after `close_after` requests. Returns it with the count of connections it accepted."""
    accepted: list[int] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(1)
        for _ in range(close_after):
            try:
                head = await reader.readuntil(b"\r\n\r\n")
            except asyncio.IncompleteReadError:  # the client closed it
                break
            length = next(
                (
                    int(line.split(b":")[1])
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-length")
                ),
                0,
            )
            await reader.readexactly(length)
            writer.write(answers.pop(0))
            await writer.drain()
        writer.close()

    return await asyncio.start_server(handle, "127.0.0.1", 0), accepted


@pytest.fixture
async def url_and_server() -> AsyncIterator[tuple[str, list[bytes], list[int]]]:
    answers: list[bytes] = []
    server, accepted = await _serve(answers, close_after=2)
    port = server.sockets[0].getsockname()[1]
    async with server:
        yield f"http://127.0.0.1:{port}", answers, accepted


async def test_chunked_lines_sized_bodies_and_reuse(
    url_and_server: tuple[str, list[bytes], list[int]],
) -> None:
    url, answers, accepted = url_and_server
    answers += [CHUNKED, SIZED, SIZED]
    async with LeanClient(connections=1) as http:
        async with http.stream("POST", f"{url}/v1/chat/completions", json={"a": 1}) as r:
            assert r.status_code == 200 and r.headers["x-meterless-node"] == "n1"
            lines = [line async for line in r.aiter_lines()]
        assert [x for x in lines if x] == ["data: {}", 'data: {"a":1}', "data: [DONE]"]
        r2 = await http.post(f"{url}/x", json={})
        assert r2.json() == {"ok": True}
        # The server closed that connection after two requests: the client tries a fresh one.
        await asyncio.sleep(0.05)
        r3 = await http.post(f"{url}/x", json={})
        assert r3.json() == {"ok": True}
    assert len(accepted) == 2
