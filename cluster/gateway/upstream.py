"""Where a request's events come from: a local node, or a provider (a route or an overflow).

Every dialect hands over the same internal request and reads back the same events (forward.py's
contract), whichever served it, so a client keeps its own dialect when its request is rented:
an Anthropic client whose request overflows to an OpenAI-compatible provider still gets
Anthropic's shapes.

Overflow (`cluster route MODEL --overflow PROVIDER`): the decision is overflow.py's. A request
that may not leave the building (a local-only key or cluster) is never rented: it waits for a
local node, or is a 503 when there is none. A provider that fails before its first event is
left for a local node when one serves the model (the request waits there), or is a 503; its
timeouts bound the wait, so an overflowing request never hangs on it.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncGenerator, Callable
from dataclasses import replace

import httpx

from cluster.errors import ApiError, InvalidRequest, NoCapacity
from cluster.gateway import rented_events
from cluster.gateway.forward import Forwarder, ForwardEvent, Tally
from cluster.gateway.overflow import ABSENT, overflow_reason
from cluster.gateway.rented import TIMEOUT, Renting
from cluster.gateway.routing import RouteRequest
from cluster.gateway.tally import RequestInfo
from cluster.providers.book import Upstream
from cluster.types import NodeTable
from node_agent.types import GenerateRequest

logger = logging.getLogger(__name__)

# A provider that takes longer than this to connect, or between two events, while a request
# overflows to it is given up on: the request goes back to a local node (or is a 503).
OVERFLOW_TIMEOUT = httpx.Timeout(connect=5.0, read=30.0, write=30.0, pool=5.0)

Events = AsyncGenerator[ForwardEvent, None]
Taps = Callable[[RequestInfo], Tally | None]


class Upstreams:
    """A replica's local nodes (its forwarder) and its providers (its renting)."""

    def __init__(self, forwarder: Forwarder, renting: Renting, taps: Taps) -> None:
        self.forwarder = forwarder
        self.renting = renting
        self.taps = taps

    def rented(self, upstream: Upstream, generate: GenerateRequest, info: RequestInfo) -> Events:
        """The events of a request for a model only a provider serves (`--to`)."""
        return self._provider(upstream, generate, info, TIMEOUT)

    def events(
        self,
        table: NodeTable,
        generate: GenerateRequest,
        route: RouteRequest,
        info: RequestInfo,
        *,
        may_rent: bool,
    ) -> Events:
        """The events of a request local nodes serve, overflowing where its model's route says."""
        upstream = self.renting.book.overflow(info.requested_model or generate.model)
        if upstream is None:
            upstream = self.renting.book.overflow(generate.model)
        if upstream is None:
            return self._local(table, generate, route, info)
        return self._overflowing(upstream, table, generate, route, info, may_rent)

    async def _overflowing(
        self,
        upstream: Upstream,
        table: NodeTable,
        generate: GenerateRequest,
        route: RouteRequest,
        info: RequestInfo,
        may_rent: bool,
    ) -> Events:
        wait = upstream.route.overflow_wait_s or 0.0
        reason = overflow_reason(table, route, self.forwarder.load, wait)
        events: Events | None = None
        if reason is not None and may_rent:
            events = await self._rent_first(upstream, generate, info, reason)
        elif reason == ABSENT:
            raise _nowhere(generate.model, "and its requests here never go to a provider")
        if events is None:
            events = self._local(table, generate, route, info)
        try:
            async for event in events:
                yield event
        finally:  # now: closing a node's stream cancels its generation
            await events.aclose()

    def _local(
        self, table: NodeTable, generate: GenerateRequest, route: RouteRequest, info: RequestInfo
    ) -> Events:
        """The events of local nodes; a whole answer's node may be replaced until it finishes."""
        return self.forwarder.stream(table, generate, route, self.taps(info), whole=not info.stream)

    async def _rent_first(
        self, upstream: Upstream, generate: GenerateRequest, info: RequestInfo, reason: str
    ) -> Events | None:
        """The provider's events once its first has come (it is sent again first); None when
        the provider failed and a local node may serve the request instead."""
        rented: Events | None = None
        try:
            rented = self._provider(upstream, generate, info, OVERFLOW_TIMEOUT)
            first = await anext(rented)
        except ApiError as exc:
            if rented is not None:
                await rented.aclose()
            if reason == ABSENT and isinstance(exc, InvalidRequest):
                raise  # the provider's word on the request, and no local node to ask
            if reason == ABSENT:
                raise _nowhere(generate.model, f"and {exc.message}") from None
            # Even a 4xx: some providers say 400 for their own failures, and a request that is
            # wrong is refused by the local node as well.
            logger.warning("overflow of %s fell back to local nodes: %s", generate.model, exc)
            return None
        return _again(first, rented)

    def _provider(
        self,
        upstream: Upstream,
        generate: GenerateRequest,
        info: RequestInfo,
        timeout: httpx.Timeout,
    ) -> Events:
        """The provider's events, tallied under the remote model (the name asked for beside)."""
        requested = info.requested_model or generate.model
        info = info._replace(model=upstream.route.remote_model, requested_model=requested)
        client = self.renting.client()
        key = self.renting.key_of(upstream)
        generate = replace(generate, model=upstream.route.remote_model)
        return rented_events.events(client, upstream, key, generate, self.taps(info), timeout)


async def _again(first: ForwardEvent, rest: Events) -> Events:
    """`first`, then the rest of the events it came from."""
    try:
        yield first
        async for event in rest:
            yield event
    finally:
        await rest.aclose()


def _nowhere(model: str, why: str) -> NoCapacity:
    return NoCapacity(f"No local node can serve `{model}` right now, {why}.", retry_after=2)
