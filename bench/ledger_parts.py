"""The ledger's own work per request, timed in-process: what it adds to a gateway and a controller.

    .venv/bin/python bench/ledger_parts.py [--requests 20000]

Gateway side: one request's tally filled in (as Forwarder.stream fills it) and its row into the
recorder's buffer, around the request's events, minus the same events iterated bare; then the
rows sent, in batches, as a replica does.
Batch transport: pickling a batch of rows, as the Serve handle call to the controller does.
Controller side: inserting rows into a ledger file that already holds 100,000, in batches of
1,000 (WAL, one transaction per batch), their ids made as a gateway makes them, and counting them
in the request metrics; and, to compare, the inserts with random ids. Each is the median of five
runs, in microseconds per request.
"""

from __future__ import annotations

import argparse
import asyncio
import pickle
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from cluster import ledger  # noqa: E402
from cluster.gateway.forward import ForwardEvent, Routed  # noqa: E402
from cluster.gateway.recorder import UsageAck, UsageBatch  # noqa: E402
from cluster.gateway.tally import GatewayMeter  # noqa: E402
from cluster.ledger.metrics import RequestCounts  # noqa: E402
from cluster.ledger.rows import Outcome, RequestInfo, UsageRow, new_request_id  # noqa: E402
from cluster.types import NodeId  # noqa: E402
from node_agent.types import Delta, Finished, Usage  # noqa: E402

USAGE = Usage(
    prompt_tokens=12,
    completion_tokens=8,
    cached_prompt_tokens=4,
    ttft_seconds=0.01,
    decode_tokens_per_second=50.0,
    duration_seconds=0.2,
)
ROUTED = Routed(NodeId("node-1"), 1)
FINISHED = Finished("stop", USAGE)
EVENTS: tuple[ForwardEvent, ...] = (
    ROUTED,
    Delta("Hello", 1, 12, 4),
    *(Delta(" w", 1) for _ in range(7)),
    FINISHED,
)


HELD = 100_000  # rows in the ledger before the controller's part is timed


async def _events() -> AsyncIterator[ForwardEvent]:
    for event in EVENTS:
        yield event


async def _ack(batch: UsageBatch) -> UsageAck:
    return UsageAck(written=len(batch.rows))


async def _requests(n: int, meter: GatewayMeter | None) -> float:
    """Seconds for `n` requests' events, tallied by `meter`'s taps as Forwarder.stream fills
    them in (or bare)."""
    start = time.perf_counter()
    for i in range(n):
        tap = None
        if meter is not None:
            info = RequestInfo(request_id=f"r{i}", model="demo", endpoint="chat", stream=True)
            tap = meter.tap(info)
        async for _ in _events():
            pass
        if tap is not None:  # what the forwarder writes, where it looks at the events anyway
            tap.node_id, tap.attempts = ROUTED.node_id, ROUTED.attempts
            tap.first_at = time.monotonic()
            tap.final = FINISHED
            tap.prompt, tap.cached, tap.generated = 12, 4, 8
            tap.end(None)
    return time.perf_counter() - start


def gateway_us(n: int) -> float:
    """Microseconds the tap and the buffer add to one request."""
    meter = GatewayMeter(_ack)
    assert meter.recorder is not None
    meter.recorder.max_buffered = n  # keep every row for the batches below

    async def both() -> float:
        bare, tapped = await _requests(n, None), await _requests(n, meter)
        start = time.perf_counter()  # what a replica does with the rows in batches
        assert meter.recorder is not None
        while meter.recorder.buffered:
            await meter.recorder.flush_once()
        return (tapped + time.perf_counter() - start - bare) / n * 1e6

    return asyncio.run(both())


def rows(n: int, make_id: Callable[[], str] = new_request_id) -> list[UsageRow]:
    """`n` typical rows, their ids made as a gateway makes them (or by `make_id`)."""
    return [
        UsageRow(
            request_id=make_id(),
            at=1.8e9 + i,
            key_id=None,
            model="demo",
            node_id="node-1",
            endpoint="chat",
            stream=True,
            prompt_tokens=12,
            cached_prompt_tokens=4,
            completion_tokens=8,
            ttft_s=0.01,
            duration_s=0.2,
            outcome=Outcome.OK,
            attempts=1,
        )
        for i in range(n)
    ]


def transport_us(n: int) -> float:
    """Microseconds to pickle and unpickle one row inside a batch of 1,000, as rows travel."""
    values = tuple(r.values() for r in rows(1_000))
    batch = UsageBatch(replica="g", rows=values, inflight=0, pending=0, closing=False)
    start = time.perf_counter()
    for _ in range(n // 1_000):
        pickle.loads(pickle.dumps(batch))
    return (time.perf_counter() - start) / (n // 1_000 * 1_000) * 1e6


def controller_us(
    n: int, make_id: Callable[[], str] = new_request_id, *, count: bool = True
) -> float:
    """Microseconds to insert one row, 1,000 to a transaction, into a ledger file that already
    holds HELD rows (an index's cost grows with it), and to count it in the request metrics."""
    held = [r.values() for r in rows(HELD, make_id)]
    data = [r.values() for r in rows(n, make_id)]  # as a batch brings them
    with tempfile.TemporaryDirectory() as tmp:
        conn = ledger.connect(Path(tmp) / ledger.FILE_NAME)
        for i in range(0, HELD, 1_000):
            ledger.insert_requests(conn, held[i : i + 1_000])
        counts = RequestCounts()
        start = time.perf_counter()
        for i in range(0, n, 1_000):
            ledger.insert_requests(conn, data[i : i + 1_000])
            if count:
                counts.observe(data[i : i + 1_000])
        elapsed = time.perf_counter() - start
        conn.close()
    return elapsed / n * 1e6


def random_ids_us(n: int) -> float:
    """controller_us's inserts with random ids (uuid4), as request ids were before they were
    time-ordered (usage.new_request_id)."""
    return controller_us(n, lambda: uuid.uuid4().hex[:24], count=False)


def inserts_us(n: int) -> float:
    """controller_us's inserts alone."""
    return controller_us(n, count=False)


def median_of(runs: int, measure: Callable[[int], float], n: int) -> float:
    """The median of `runs` measurements."""
    return statistics.median(measure(n) for _ in range(runs))


def parts(n: int = 20_000) -> dict[str, float]:
    """Each part's microseconds per request."""
    return {
        "gateway": median_of(5, gateway_us, n),
        "transport": median_of(5, transport_us, n),
        "controller": median_of(5, controller_us, n),
    }


def main() -> None:
    """Print the parts."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=20_000)
    n = parser.parse_args().requests
    found = parts(n)
    for name, us in found.items():
        print(f"{name:>10}: {us:6.1f} us per request")
    print(f"{'total':>10}: {sum(found.values()):6.1f} us per request")
    print(
        f"(the controller's inserts alone: {median_of(3, inserts_us, n):.1f} us per request; "
        f"with random ids, uuid4: {median_of(3, random_ids_us, n):.1f})"
    )


if __name__ == "__main__":
    main()
