"""The wait for a forwarded stream's node, which a dialect may answer with keepalives.

A forwarded stream's first event (Routed) comes once a node has sent the first token, after
the prompt is prefilled: on a Mac, a coding agent's 20k-token prompt takes a while. An ApiError
before then is the request's HTTP error. A dialect whose clients give up on a silent stream
(Anthropic's `ping`, Codex's idle timeout) asks for the node with a deadline, and when it
passes, starts its response and keeps the client company until the node answers.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from typing import Protocol

from cluster.errors import ApiError, UpstreamFailed
from cluster.gateway.forward import ForwardEvent, Routed, StreamFailed
from node_agent.types import Finished, TokenEvent


class Opening:
    """One forwarded stream and the wait for its Routed event (its first)."""

    def __init__(self, events: AsyncGenerator[ForwardEvent, None]) -> None:
        self.events = events
        self._first: asyncio.Future[ForwardEvent] = asyncio.ensure_future(anext(events))

    async def routed(self, within: float | None = None) -> Routed | None:
        """The node that took the request, raising the ApiError of a request no node took;
        None if `within` seconds pass first (the wait goes on; ask again)."""
        done, _ = await asyncio.wait({self._first}, timeout=within)
        if not done:
            return None
        routed = self._first.result()
        assert isinstance(routed, Routed)
        return routed

    async def close(self) -> None:
        """Stop waiting and close the stream (which cancels the generation on its node)."""
        if not self._first.done():
            self._first.cancel()
        with contextlib.suppress(BaseException):
            await self._first
        await self.events.aclose()


class Encoder(Protocol):
    """A dialect's stream encoder: frames for each of a node's events, and for a failure."""

    def event(self, event: TokenEvent | Finished) -> bytes:
        """The frames for one event; b"" when it shows nothing."""
        ...

    def fail(self, error: ApiError) -> bytes:
        """The frames that end a started stream with `error`."""
        ...


async def relay(
    opening: Opening,
    encoder: Encoder,
    *,
    preamble: bytes,
    keepalive: Callable[[], bytes],
    every_s: float,
) -> AsyncIterator[bytes]:
    """A dialect's stream: `preamble` (what the dialect sends before its node answers), a
    `keepalive()` every `every_s` while the node has not (it may have already), then the
    node's events; an ApiError or a failed node ends it with the encoder's failure frames.
    Closing it closes the forwarded stream, which cancels the generation on the node."""
    try:
        if preamble:
            yield preamble
        try:
            while await opening.routed(every_s) is None:
                yield keepalive()
        except ApiError as exc:
            yield encoder.fail(exc)
            return
        async for event in opening.events:
            if isinstance(event, StreamFailed):
                yield encoder.fail(UpstreamFailed(event.message))
                return
            if not isinstance(event, Routed) and (frames := encoder.event(event)):
                yield frames
    finally:
        await opening.close()  # the client left: cancel the generation on the node
