"""A gateway replica's accounting: a tally on each request, made into a ledger row at its end.

With the ledger off (`cluster up --no-ledger`) requests pass through untouched: no tap, no row,
no request counters (the controller counts the rows, cluster/ledger/metrics.py); /metrics then shows
only the node gauges.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Callable
from typing import NamedTuple

from cluster.errors import ModelNotFound, NoCapacity
from cluster.gateway.forward import StreamFailed
from cluster.gateway.recorder import Recorder, Send
from cluster.ledger.rows import UNKNOWN_MODEL, Outcome, Values
from cluster.types import NodeId
from node_agent.types import Finished

logger = logging.getLogger(__name__)


class GatewayMeter:
    """Taps requests and buffers their rows for the controller."""

    def __init__(self, send: Send | None) -> None:
        self.recorder = None if send is None else Recorder(send, replica=uuid.uuid4().hex[:12])
        self._task: asyncio.Task[None] | None = None

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
        if recorder is None:
            return None
        recorder.begin()
        return Tap(info, recorder.end)


class RequestInfo(NamedTuple):
    """What the gateway knows about a request before forwarding it (a named tuple: one per
    request, and built in half the time of a frozen dataclass)."""

    request_id: str
    model: str  # the model served: the one asked for, or what its alias names
    endpoint: str
    stream: bool
    key_id: str | None = None
    requested_model: str | None = None  # the name the client asked for, where it differs
    client: str | None = None  # the sending program's family (gateway/client_family.py)


class Tap:
    """One request's tally (forward.Tally): the forwarder fills it in, and its end makes the row.

    The row is made as the ledger stores it (UsageRow.values), a plain tuple of strings and
    numbers: the garbage collector stops tracking such a tuple the first time it sees it, while
    rows wait in a replica's buffers for their batch.
    """

    __slots__ = (
        "_at",
        "_clock",
        "_done",
        "_start",
        "attempts",
        "cached",
        "features",
        "final",
        "first_at",
        "generated",
        "info",
        "node_id",
        "prompt",
    )

    def __init__(
        self,
        info: RequestInfo,
        done: Callable[[Values], None] | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.info = info
        self._done = done
        self._clock = clock  # the forwarder sets first_at from time.monotonic, on this clock
        self._start = clock()
        self._at = wall()
        self.node_id: NodeId | None = None
        self.attempts = 0
        self.first_at: float | None = None
        self.final: Finished | StreamFailed | None = None
        self.prompt = self.cached = self.generated = 0
        self.features: set[str] = set()  # see UsageRow.features; the forwarder adds to it

    def end(self, error: BaseException | None) -> None:
        """The request's events ended (with `error` if one was raised): make its row and hand
        it to `done`, which must never break the request it records."""
        if self._done is not None:
            try:
                self._done(self.row(error))
            except Exception:
                logger.exception("recording request %s failed", self.info.request_id)

    def row(self, error: BaseException | None = None) -> Values:
        """The request's row: its outcome is the node's end if there was one, else an error if
        one was raised, else the client went away."""
        now = self._clock()
        final, first, node_ttft = self.final, self.first_at, None
        if final is None:
            outcome = _ERROR if error is not None else _CANCELLED
            prompt, cached, completion = self.prompt, self.cached, self.generated
        else:
            u = final.usage
            prompt, cached = u.prompt_tokens, u.cached_prompt_tokens
            completion = u.completion_tokens
            if isinstance(final, StreamFailed):
                outcome = _ERROR
            elif final.finish_reason == "cancelled":
                outcome = _CANCELLED
            else:
                outcome = _OK if self.attempts <= 1 else _FAILED_OVER
                node_ttft = u.ttft_seconds if first is not None else None
        i = self.info
        model, requested = i.model, i.requested_model
        if isinstance(error, ModelNotFound):  # a name a client chose, not a model
            model, requested = UNKNOWN_MODEL, None
        return (  # in the order of UsageRow's fields
            i.request_id,
            self._at,
            i.key_id,
            model,
            self.node_id,
            i.endpoint,
            int(i.stream),
            prompt,
            cached,
            completion,
            None if first is None else first - self._start,  # ttft_s
            now - self._start,  # duration_s
            outcome,
            self.attempts,
            node_ttft,
            ",".join(sorted(self.features)),
            None if requested == model else requested,
            i.client,
        )


_OK, _FAILED_OVER, _CANCELLED, _ERROR = (o.value for o in Outcome)
