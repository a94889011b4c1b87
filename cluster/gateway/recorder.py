"""A gateway replica's side of the ledger: buffer rows, send them to the controller in batches.

Gateway replicas may be several and on other machines, so none of them opens the SQLite file:
each keeps its finished requests' rows in memory and a background task sends them to the
controller every `interval_s` (sooner once `batch_rows` are waiting), one call per batch. Rows
leave the buffer only once the controller has committed them; a failed send keeps them for the
next try, and the ledger ignores a row it already has (by request id), so a retry never doubles.
A ledger that cannot write (a full disk) answers `stored=False`: the rows stay, up to
`max_buffered` (beyond it the oldest are dropped, and counted in every batch for /metrics).

Every send, empty or not, also tells the controller how many requests are in flight here, and
its answer says whether the cluster is shutting down. From then on the replica refuses new
requests and sends each row as soon as it is made, so that `cluster up` can wait, before it
stops Ray, until every replica has nothing in flight and nothing unsent: a clean shutdown loses
no row.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import itertools
import logging
import time
from collections.abc import Awaitable, Callable

from cluster.ledger.rows import UsageAck, UsageBatch, Values

logger = logging.getLogger(__name__)


Send = Callable[[UsageBatch], Awaitable[UsageAck]]


class Recorder:
    """Buffers one gateway replica's rows and sends them in batches off the request path."""

    def __init__(
        self,
        send: Send,
        *,
        replica: str,
        interval_s: float = 0.5,
        batch_rows: int = 1_000,
        max_buffered: int = 100_000,
    ) -> None:
        self.replica = replica
        self._send = send
        self.interval_s = interval_s
        self.batch_rows = batch_rows
        self.max_buffered = max_buffered
        self._rows: collections.deque[Values] = collections.deque()
        self._wake = asyncio.Event()
        self.inflight = 0
        self.closing = False
        self.dropped = 0
        self._last_warning = 0.0
        self._stored = True

    @property
    def buffered(self) -> int:
        """Rows made and not yet committed by the controller."""
        return len(self._rows)

    def begin(self) -> None:
        """A request starts."""
        self.inflight += 1

    def end(self, row: Values) -> None:
        """A request ended: buffer its row (never blocks, never raises)."""
        self.inflight -= 1
        self._rows.append(row)
        if len(self._rows) > self.max_buffered:  # the controller has been away a long time
            self._rows.popleft()
            self.dropped += 1
        if self.closing or len(self._rows) >= self.batch_rows:
            self._wake.set()

    async def run(self) -> None:
        """Send batches forever; a failed send is retried, never fatal."""
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.interval_s)
            self._wake.clear()
            try:
                await self.flush_once()
                while self._rows and (self.closing or len(self._rows) >= self.batch_rows):
                    await self.flush_once()
            except Exception as exc:  # the controller restarting or unreachable: retry later
                self._warn(exc)

    async def flush_once(self) -> None:
        """Send one batch (possibly empty); its rows leave the buffer once committed."""
        batch = tuple(itertools.islice(self._rows, self.batch_rows))
        ack = await self._send(
            UsageBatch(
                replica=self.replica,
                rows=batch,
                inflight=self.inflight,
                pending=len(self._rows) - len(batch),
                closing=self.closing,
                dropped=self.dropped,
            )
        )
        if ack.stored:
            sent = {id(row) for row in batch}  # overflow may have dropped some meanwhile
            while self._rows and id(self._rows[0]) in sent:
                self._rows.popleft()
        self._note_stored(ack.stored)
        if ack.closing and not self.closing:
            logger.info("the cluster is shutting down: refusing new requests")
        self.closing = ack.closing

    def _note_stored(self, stored: bool) -> None:
        """Say once when the ledger starts refusing rows (it cannot write) and once when it
        takes them again; the rows wait here meanwhile, up to `max_buffered`."""
        if stored == self._stored:
            return
        self._stored = stored
        if not stored:
            logger.warning(
                "the ledger cannot write: keeping usage rows here (%d, at most %d) until it can",
                len(self._rows),
                self.max_buffered,
            )
        else:
            logger.info("the ledger writes again (%d usage rows dropped meanwhile)", self.dropped)

    def _warn(self, exc: Exception) -> None:
        now = time.monotonic()
        if now - self._last_warning > 30:
            self._last_warning = now
            logger.warning(
                "usage rows not sent yet (%d buffered, %d dropped): %s",
                len(self._rows),
                self.dropped,
                exc,
            )
