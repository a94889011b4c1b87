"""A gateway replica's accounting: a tap on each request, the row recorder, and /metrics.

With the ledger off (`cluster up --no-ledger`) requests pass through untouched: no tap, no row,
no request counters; /metrics then shows only the node gauges.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Mapping
from typing import Any

from cluster.errors import NoCapacity
from cluster.metrics import GatewayMetrics
from cluster.recorder import Recorder, Send
from cluster.types import NodeTable
from cluster.usage import NODE_ID, RequestInfo, Tap, Values

OBSERVE_EVERY = 1_024  # rows ended before they are counted, if /metrics is not read sooner


class GatewayMeter:
    """Taps requests, buffers their rows for the controller, and keeps the replica's metrics."""

    def __init__(self, send: Send | None) -> None:
        self.metrics = GatewayMetrics()
        self.recorder = None if send is None else Recorder(send, replica=uuid.uuid4().hex[:12])
        self._task: asyncio.Task[None] | None = None
        self.tapping = True  # only bench/ledger.py turns it off (Gateway.set_tapping)
        self._table = NodeTable()
        self._names: dict[str, str] = {}  # node id -> name, of every node seen
        self._unobserved: list[Values] = []  # rows not in the metrics yet

    def start(self) -> None:
        """Start sending rows in the background (call on the replica's event loop)."""
        if self.recorder is not None and self._task is None:
            self._task = asyncio.get_running_loop().create_task(self.recorder.run())

    def check_open(self) -> None:
        """503 once the cluster is shutting down: a request started now could not be recorded."""
        if self.recorder is not None and self.recorder.closing:
            raise NoCapacity("The cluster is shutting down.", retry_after=5)

    def tap(self, info: RequestInfo, table: NodeTable) -> Tap | None:
        """One request's tally, which records it when it ends (None with the ledger off); the
        forwarder fills it in (Forwarder.stream)."""
        recorder = self.recorder
        if recorder is None or not self.tapping:
            return None
        if table is not self._table:  # a new snapshot: every ~0.25 s at most
            self._table = table
            self._names.update((n.node_id, n.name) for n in table.nodes)
        recorder.begin()
        return Tap(info, self._done)

    def _done(self, row: Values) -> None:
        assert self.recorder is not None
        self.recorder.end(row)
        self._unobserved.append(row)
        if len(self._unobserved) >= OBSERVE_EVERY:
            self.count_ended()

    def count_ended(self) -> None:
        """Count the rows not counted yet. A loop over many rows takes a fraction of the time,
        per row, of one call per request among the request's other work (bench/ledger.py)."""
        rows, self._unobserved = self._unobserved, []
        names, observe = self._names, self.metrics.observe
        for row in rows:
            node = row[NODE_ID] or ""
            observe(row, names.get(node, node))

    def render(self, snapshot: Mapping[str, Any], table: NodeTable) -> bytes:
        """The Prometheus exposition text, every request ended so far counted."""
        self.count_ended()
        return self.metrics.render(snapshot, table)
