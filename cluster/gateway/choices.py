"""Several choices of one request (`n` > 1): a generation for each, their events interleaved.

Each choice is a GenerateRequest of its own (request id `<id>-<i>`, seed `seed + i` where a
seed was given) that the forwarder routes on its own: with several nodes serving the model the
choices spread over them, on one node they batch. Each has its own tally, so the ledger gets a
row per choice, as it would for as many requests.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Callable, Sequence
from dataclasses import dataclass, replace

from cluster.errors import UpstreamFailed
from cluster.gateway.forward import Forwarder, ForwardEvent, Routed, Tally
from cluster.gateway.routing import RouteRequest
from cluster.types import NodeTable
from node_agent.types import GenerateRequest

Events = AsyncGenerator[ForwardEvent, None]


@dataclass(frozen=True, slots=True)
class Sampled:
    """An event of the choice `index`."""

    index: int
    event: ForwardEvent


def samples(request: GenerateRequest, n: int) -> list[GenerateRequest]:
    """The `n` generations of a request: the first is `request`, the others get ids and seeds
    of their own (the same seed would give the same answer n times)."""
    out = [request]
    seed = request.sampling.seed
    for i in range(1, n):
        sampling = request.sampling if seed is None else replace(request.sampling, seed=seed + i)
        out.append(replace(request, request_id=f"{request.request_id}-{i}", sampling=sampling))
    return out


def choice_events(
    forwarder: Forwarder,
    table: NodeTable,
    request: GenerateRequest,
    n: int,
    route: RouteRequest,
    tally: Callable[[str], Tally | None],
    *,
    whole: bool = False,
) -> AsyncGenerator[Sampled, None]:
    """The events of `n` choices of `request`, interleaved, each routed on its own and tallied
    by `tally(its request id)`; `whole` as for Forwarder.stream. Only the first keeps the
    prefix keys: affinity would send every choice to the node that holds the prompt, where they
    would queue rather than spread."""
    streams = [
        forwarder.stream(
            table,
            sample,
            route if i == 0 else replace(route, prefix_keys=()),
            tally(sample.request_id),
            whole=whole,
        )
        for i, sample in enumerate(samples(request, n))
    ]
    return interleave(streams)


async def _next(events: Events) -> ForwardEvent | None:
    # None for the end: a task must not raise StopAsyncIteration.
    try:
        return await anext(events)
    except StopAsyncIteration:
        return None


async def interleave(streams: Sequence[Events]) -> AsyncGenerator[Sampled, None]:
    """The streams' events as they come, each tagged with its stream's index; the first error
    of any stream is raised, and closing this closes every stream (cancelling its generation)."""
    pending = {asyncio.ensure_future(_next(s)): i for i, s in enumerate(streams)}
    try:
        while pending:
            done, _ = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            for task in sorted(done, key=pending.__getitem__):
                i = pending.pop(task)
                event = task.result()
                if event is None:
                    continue
                pending[asyncio.ensure_future(_next(streams[i]))] = i
                yield Sampled(i, event)
    finally:
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        for stream in streams:
            await stream.aclose()


async def started(
    events: AsyncGenerator[Sampled, None], n: int
) -> tuple[list[Routed], AsyncGenerator[Sampled, None]]:
    """Wait until each of the `n` choices has a node, raising the first ApiError before then;
    then each choice's Routed, and the events (those that came meanwhile first)."""
    routed: dict[int, Routed] = {}
    early: list[Sampled] = []
    try:
        while len(routed) < n:
            item = await anext(events)
            if isinstance(item.event, Routed):
                routed[item.index] = item.event
            else:
                early.append(item)
    except StopAsyncIteration:
        raise UpstreamFailed("a choice's stream ended before it was routed") from None
    except BaseException:
        await events.aclose()
        raise
    return [routed[i] for i in range(n)], _replay(early, events)


async def _replay(
    early: list[Sampled], events: AsyncGenerator[Sampled, None]
) -> AsyncGenerator[Sampled, None]:
    try:
        for item in early:
            yield item
        async for item in events:
            yield item
    finally:
        await events.aclose()
