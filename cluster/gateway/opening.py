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
from collections.abc import AsyncGenerator

from cluster.gateway.forward import ForwardEvent, Routed


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
