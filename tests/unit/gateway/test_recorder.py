"""A gateway replica's row buffer: batches, retries, and the shutdown handshake."""

from __future__ import annotations

import asyncio

from cluster.gateway.recorder import Recorder
from cluster.ledger.rows import UsageAck, UsageBatch, UsageRow, Values


def row(i: int) -> Values:
    """A minimal row's values (as a gateway's tap makes them) with a unique request id."""
    return UsageRow(
        request_id=f"r{i}",
        at=0.0,
        key_id=None,
        model="demo",
        node_id="n",
        endpoint="chat",
        stream=False,
    ).values()


class Controller:
    """Commits batches, or fails while `down`; answers `closing`."""

    def __init__(self) -> None:
        self.batches: list[UsageBatch] = []
        self.down = False
        self.full = False  # the ledger cannot write: batches are answered, not stored
        self.closing = False

    async def send(self, batch: UsageBatch) -> UsageAck:
        """The controller's record_usage."""
        if self.down:
            raise ConnectionError("controller restarting")
        if self.full:
            return UsageAck(written=0, closing=self.closing, stored=False)
        self.batches.append(batch)
        return UsageAck(written=len(batch.rows), closing=self.closing)

    def rows(self) -> list[str]:
        """Request ids committed, in order."""
        return [UsageRow._make(r).request_id for b in self.batches for r in b.rows]


async def test_rows_go_in_batches_and_leave_the_buffer_once_committed() -> None:
    c = Controller()
    rec = Recorder(c.send, replica="g1", batch_rows=2)
    for i in range(3):
        rec.begin()
        rec.end(row(i))
    await rec.flush_once()
    assert c.rows() == ["r0", "r1"] and rec.buffered == 1
    assert c.batches[0].rows[0] == row(0) and type(c.batches[0].rows[0]) is tuple
    assert (c.batches[0].pending, c.batches[0].inflight, c.batches[0].replica) == (1, 0, "g1")
    await rec.flush_once()
    await rec.flush_once()  # an empty send is a heartbeat
    assert c.rows() == ["r0", "r1", "r2"] and rec.buffered == 0 and len(c.batches) == 3


async def test_a_failed_send_keeps_the_rows_for_the_next_one() -> None:
    c = Controller()
    rec = Recorder(c.send, replica="g1", interval_s=0.01)
    task = asyncio.get_running_loop().create_task(rec.run())
    try:
        c.down = True
        rec.begin()
        rec.end(row(1))
        await asyncio.sleep(0.05)
        assert c.rows() == [] and rec.buffered == 1
        c.down = False
        await asyncio.sleep(0.05)
        assert c.rows() == ["r1"] and rec.buffered == 0
    finally:
        task.cancel()


async def test_rows_the_ledger_could_not_store_stay_and_overflow_is_counted() -> None:
    c = Controller()
    rec = Recorder(c.send, replica="g1", max_buffered=3)
    c.full = True
    for i in range(5):
        rec.end(row(i))
    await rec.flush_once()
    assert c.rows() == [] and rec.buffered == 3 and rec.dropped == 2
    c.full = False
    await rec.flush_once()
    assert c.rows() == ["r2", "r3", "r4"] and rec.buffered == 0
    assert c.batches[-1].dropped == 2  # told to the controller, for /metrics


async def test_closing_is_learnt_from_the_ack_and_rows_then_go_at_once() -> None:
    c = Controller()
    rec = Recorder(c.send, replica="g1", interval_s=60.0)
    task = asyncio.get_running_loop().create_task(rec.run())
    try:
        c.closing = True
        rec.begin()
        await rec.flush_once()  # any send (a heartbeat here) brings the news
        assert rec.closing and c.batches[-1].inflight == 1
        rec.end(row(1))  # far below batch_rows and long before the interval: sent at once
        await asyncio.sleep(0.05)
        assert c.rows() == ["r1"]
        rec.begin()
        rec.end(row(2))
        await asyncio.sleep(0.05)
        assert c.rows() == ["r1", "r2"]
        assert c.batches[-1].closing and c.batches[-1].inflight == 0
    finally:
        task.cancel()


async def test_the_buffer_is_bounded() -> None:
    c = Controller()
    rec = Recorder(c.send, replica="g1", max_buffered=2)
    for i in range(4):
        rec.begin()
        rec.end(row(i))
    assert rec.buffered == 2 and rec.dropped == 2
    await rec.flush_once()
    assert c.rows() == ["r2", "r3"]
