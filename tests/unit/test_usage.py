"""One row per request, whatever way the request ends."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence

import pytest

from cluster.errors import NoCapacity
from cluster.forward import ForwardEvent, Routed, StreamFailed
from cluster.types import NodeId
from cluster.usage import Outcome, RequestInfo, Tap, UsageRow, metered
from node_agent.types import Delta, Finished, Usage

INFO = RequestInfo(request_id="r1", model="demo", endpoint="chat", stream=True)


def usage(prompt: int, completion: int, cached: int = 0) -> Usage:
    """A node's usage with the token counts that matter here."""
    return Usage(
        prompt_tokens=prompt,
        completion_tokens=completion,
        cached_prompt_tokens=cached,
        ttft_seconds=0.1,
        decode_tokens_per_second=10.0,
        duration_seconds=1.0,
    )


async def events(items: Sequence[ForwardEvent | Exception]) -> AsyncIterator[ForwardEvent]:
    """The events in order; an exception in the list is raised there."""
    for item in items:
        if isinstance(item, Exception):
            raise item
        yield item


class Clock:
    """A clock that moves one second each time it is read."""

    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        self.t += 1.0
        return self.t


async def run(items: Sequence[ForwardEvent | Exception], take: int | None = None) -> UsageRow:
    """Drive `items` through `metered` as the gateway would; returns the one row made."""
    rows: list[UsageRow] = []
    stream = metered(events(items), Tap(INFO, clock=Clock(), wall=lambda: 1e9), rows.append)
    got = 0
    try:
        async for _ in stream:
            got += 1
            if take is not None and got == take:
                break
    except Exception:
        pass
    finally:
        await stream.aclose()  # type: ignore[attr-defined]
    assert len(rows) == 1
    return rows[0]


async def test_finished_on_the_first_node_is_ok_with_the_nodes_counts() -> None:
    row = await run(
        [
            Routed(NodeId("n1"), 1),
            Delta("a", 1, 7, 3),
            Delta("b", 2),
            Finished("stop", usage(7, 3, cached=3)),
        ]
    )
    assert (row.outcome, row.node_id, row.attempts) == (Outcome.OK, "n1", 1)
    assert (row.prompt_tokens, row.cached_prompt_tokens, row.completion_tokens) == (7, 3, 3)
    assert row.ttft_s == 1.0 and row.duration_s == 2.0  # clock reads 1 (start), 2 (first), 3
    assert (row.request_id, row.model, row.at, row.key_id) == ("r1", "demo", 1e9, None)


async def test_finished_after_failover_is_failed_over() -> None:
    row = await run([Routed(NodeId("n2"), 2), Finished("length", usage(5, 0))])
    assert (row.outcome, row.node_id, row.attempts) == (Outcome.FAILED_OVER, "n2", 2)
    assert row.ttft_s is None


async def test_an_error_before_routing_is_an_error_without_a_node() -> None:
    row = await run([NoCapacity("no node", retry_after=2)])
    assert (row.outcome, row.node_id, row.attempts, row.completion_tokens) == (
        Outcome.ERROR,
        None,
        0,
        0,
    )


async def test_a_stream_that_fails_mid_way_is_an_error_with_the_usage_so_far() -> None:
    row = await run(
        [
            Routed(NodeId("n1"), 1),
            Delta("a", 2, 9, 4),
            StreamFailed("node died", usage(9, 2, cached=4)),
        ]
    )
    assert (row.outcome, row.prompt_tokens, row.cached_prompt_tokens, row.completion_tokens) == (
        Outcome.ERROR,
        9,
        4,
        2,
    )


async def test_a_client_that_leaves_is_cancelled_with_what_was_generated() -> None:
    row = await run(
        [
            Routed(NodeId("n1"), 1),
            Delta("a", 1, 6),
            Delta("b", 1),
            Delta("c", 1),
            Finished("stop", usage(6, 3)),
        ],
        take=3,
    )
    assert (row.outcome, row.prompt_tokens, row.completion_tokens) == (Outcome.CANCELLED, 6, 2)


async def test_a_cancelled_task_is_cancelled_not_an_error() -> None:
    rows: list[UsageRow] = []

    async def forever() -> AsyncIterator[ForwardEvent]:
        yield Routed(NodeId("n1"), 1)
        await asyncio.sleep(3600)
        yield Delta("never", 1)

    async def consume() -> None:
        async for _ in metered(forever(), Tap(INFO), rows.append):
            pass

    task = asyncio.get_running_loop().create_task(consume())
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert [r.outcome for r in rows] == [Outcome.CANCELLED]


async def test_a_generation_the_node_cancelled_is_cancelled() -> None:
    row = await run([Routed(NodeId("n1"), 1), Finished("cancelled", usage(4, 1))])
    assert row.outcome is Outcome.CANCELLED and row.completion_tokens == 1


async def test_a_failing_recorder_does_not_break_the_request() -> None:
    def broken(row: UsageRow) -> None:
        raise RuntimeError("disk full")

    stream = metered(
        events([Routed(NodeId("n1"), 1), Finished("stop", usage(1, 1))]), Tap(INFO), broken
    )
    assert len([e async for e in stream]) == 2
