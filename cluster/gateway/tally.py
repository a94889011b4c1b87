"""A gateway replica's accounting: a tap on each request and the row recorder.

With the ledger off (`cluster up --no-ledger`) requests pass through untouched: no tap, no row,
no request counters (the controller counts the rows, cluster/ledger/metrics.py); /metrics then shows
only the node gauges.
"""

from __future__ import annotations

import asyncio
import uuid

from cluster.errors import NoCapacity
from cluster.gateway.recorder import Recorder, Send
from cluster.ledger.rows import RequestInfo, Tap


class GatewayMeter:
    """Taps requests and buffers their rows for the controller."""

    def __init__(self, send: Send | None) -> None:
        self.recorder = None if send is None else Recorder(send, replica=uuid.uuid4().hex[:12])
        self._task: asyncio.Task[None] | None = None
        self.tapping = True  # only bench/ledger.py turns it off (Gateway.set_tapping)

    def start(self) -> None:
        """Start sending rows in the background (call on the replica's event loop)."""
        if self.recorder is not None and self._task is None:
            self._task = asyncio.get_running_loop().create_task(self.recorder.run())

    def check_open(self) -> None:
        """503 once the cluster is shutting down: a request started now could not be recorded."""
        if self.recorder is not None and self.recorder.closing:
            raise NoCapacity("The cluster is shutting down.", retry_after=5)

    def tap(self, info: RequestInfo) -> Tap | None:
        """One request's tally, which records it when it ends (None with the ledger off); the
        forwarder fills it in (Forwarder.stream)."""
        recorder = self.recorder
        if recorder is None or not self.tapping:
            return None
        recorder.begin()
        return Tap(info, recorder.end)
