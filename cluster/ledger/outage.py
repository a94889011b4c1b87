"""When the ledger cannot write: a full disk, a read-only file system, a database locked by
another process. The cluster keeps serving; what it has not written waits in memory.

Request rows wait where they were made, in the gateways' buffers (cluster/gateway/recorder.py):
the controller answers a batch it could not commit with `stored=False` and the gateway keeps its
rows and sends them again. The controller's own writes (node samples, node sightings) wait here,
in order, bounded: beyond the bound the oldest is dropped, and counted. Every later write first
retries what waits, so once the disk has room everything arrives in order; each write is one
transaction (rolled back on failure) and request rows are keyed by their id, so none is written
twice. The outage is logged once when it begins and once when it ends, never per request.
"""

from __future__ import annotations

import collections
import logging
import sqlite3
import time
from collections.abc import Callable
from typing import Any

logger = logging.getLogger(__name__)

Write = tuple[Callable[..., Any], tuple[Any, ...]]  # fn(conn, *args)
MAX_HELD = 10_000  # node samples: ~10 s chunks, so about a day of a dozen nodes


class Outage:
    """The ledger's writes that failed, held for the next try; used on the ledger's thread only."""

    def __init__(
        self, where: str, *, max_held: int = MAX_HELD, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.where = where
        self.max_held = max_held
        self._clock = clock
        self._held: collections.deque[Write] = collections.deque()
        self.since: float | None = None  # monotonic time of the first failure of this outage
        self.errors = 0  # failed writes, ever
        self.dropped = 0  # held writes given up beyond the bound, ever

    @property
    def held(self) -> int:
        """Writes waiting for the next try."""
        return len(self._held)

    def run(self, conn: sqlite3.Connection, fn: Callable[..., Any], *args: Any) -> tuple[bool, Any]:
        """Retry what waits, then `fn(conn, *args)`: (True, its result), or (False, None) when the
        database refused it (the caller keeps or holds what it wanted written)."""
        try:
            while self._held:
                held_fn, held_args = self._held[0]
                held_fn(conn, *held_args)
                self._held.popleft()
            result = fn(conn, *args)
        except sqlite3.OperationalError as exc:  # full, read-only, locked, I/O: try again later
            self._failed(exc)
            return False, None
        self._recovered()
        return True, result

    def write(self, conn: sqlite3.Connection, fn: Callable[..., Any], *args: Any) -> None:
        """`fn(conn, *args)` now, or held for the next try if the database refuses it."""
        ok, _ = self.run(conn, fn, *args)
        if not ok:
            self._held.append((fn, args))
            if len(self._held) > self.max_held:
                self._held.popleft()
                self.dropped += 1

    def _failed(self, exc: sqlite3.OperationalError) -> None:
        self.errors += 1
        if self.since is None:
            self.since = self._clock()
            logger.error(
                "ledger: cannot write to %s (%s); requests are still served, their rows wait "
                "in the gateways and node samples here, and every batch tries again",
                self.where,
                exc,
            )

    def _recovered(self) -> None:
        if self.since is not None:
            logger.warning(
                "ledger: writing to %s again after %.0f s; the rows that waited are written",
                self.where,
                self._clock() - self.since,
            )
            self.since = None
