"""The controller's ledger: the SQLite file, node energy, cost profiles, reports, clean shutdown.

Only the controller (one replica, on the head) opens the SQLite file, on one thread of its own,
so its event loop never waits on the disk. Gateways send their rows in batches (see
cluster/gateway/recorder.py); `record` returns once a batch is committed. Status samples become
NodeSample chunks (cluster/ledger/energy.py) written as they complete. `prepare_shutdown` is how
`cluster up` makes a clean stop lose nothing: it tells the gateways, through their next send,
to refuse new requests, then waits until each has nothing in flight and nothing unsent.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import functools
import logging
import sqlite3
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from cluster.errors import Unavailable
from cluster.ledger import reports, retention, series, store, timeline
from cluster.ledger.cost import Price
from cluster.ledger.energy import EnergyMeter, NodeSample
from cluster.ledger.metrics import RequestCounts
from cluster.ledger.outage import Outage
from cluster.ledger.prices import PriceTable
from cluster.ledger.rows import UsageAck, UsageBatch, Values
from cluster.ledger.totals import Totals
from cluster.node_client import NodeDescription, NodeStatusSample
from cluster.types import CostProfile

logger = logging.getLogger(__name__)

T = TypeVar("T")
GATEWAY_SILENT_S = 5.0  # a gateway not heard from for this long is gone (not waited for)


@dataclass(frozen=True)
class _Gateway:
    heard: float  # monotonic
    batch: UsageBatch


class LedgerService:
    """The ledger and everything the controller derives from it."""

    def __init__(
        self,
        *,
        path: Path | str,
        prices: PriceTable,
        provider_prices: Callable[[], Mapping[str, Mapping[str, Price]]] = dict,
        clock: Callable[[], float] = time.time,
        chunk_s: float = 10.0,
        max_gap_s: float = 5.0,
    ) -> None:
        self.path = path
        self.prices = prices
        self.provider_prices = provider_prices  # read at each report: `cluster providers` edits
        self._clock = clock
        self._chunk_s = chunk_s
        self._max_gap_s = max_gap_s
        self._pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="ledger")
        self._conn: sqlite3.Connection | None = None
        self._gateways: dict[str, _Gateway] = {}
        self._closing_since: float | None = None
        self._meters: dict[str, tuple[str, EnergyMeter]] = {}  # node -> (address, meter)
        self._writes: set[asyncio.Future[Any]] = set()
        self._totals = Totals(reports.Snapshot())  # all time, loaded by `open`
        self.requests = RequestCounts()  # every row committed since the controller started
        self._outage = Outage(str(path))
        self._backlogs: dict[str, tuple[float, int]] = {}  # replica -> (heard, rows unsent)
        self._dropped: dict[str, int] = {}  # replica -> rows it gave up, ever

    async def open(self) -> None:
        """Open (or create) the ledger file; again after a failed start, a no-op once open."""
        if self._conn is not None:
            return
        loop = asyncio.get_running_loop()
        self._conn = await loop.run_in_executor(self._pool, store.connect, self.path)
        self._totals = await self._db(lambda conn: Totals(_snapshot(conn, None)))
        logger.info("ledger at %s (%d requests)", self.path, await self._db(store.count))

    async def close(self) -> None:
        """Write what the meters hold and close the file."""
        self._close_meters()
        await asyncio.gather(*self._writes, return_exceptions=True)
        if self._conn is not None:
            await self._db(lambda c: c.close())
            self._conn = None
        self._pool.shutdown(wait=True)

    # -- gateways ----------------------------------------------------------------------------

    async def record(self, batch: UsageBatch) -> UsageAck:
        """Commit a gateway's batch; the answer says whether it was stored (else the gateway
        keeps its rows for the next send) and whether the cluster is shutting down."""
        self._backlogs[batch.replica] = (time.monotonic(), len(batch.rows) + batch.pending)
        self._dropped[batch.replica] = batch.dropped
        closing = self._closing_since is not None
        insert = self._insert_rows if batch.rows else _nothing  # still retries what waits
        stored, fresh = await self._db(self._outage.run, insert, batch.rows)
        if not stored:
            return UsageAck(written=0, closing=closing, stored=False)
        self.requests.observe(fresh)
        self._backlogs[batch.replica] = (time.monotonic(), batch.pending)  # the rest is in
        self._gateways[batch.replica] = _Gateway(time.monotonic(), batch)
        return UsageAck(written=len(fresh), closing=closing)

    def ledger_health(self) -> dict[str, Any]:
        """Whether the ledger writes, and what waits in memory meanwhile (for /metrics)."""
        now = time.monotonic()
        return {
            "writable": self._outage.since is None,
            "write_errors": self._outage.errors,
            "rows_waiting": self._outage.held
            + sum(n for heard, n in self._backlogs.values() if now - heard < GATEWAY_SILENT_S),
            "rows_dropped": self._outage.dropped + sum(self._dropped.values()),
        }

    async def prepare_shutdown(self, timeout_s: float = 10.0) -> dict[str, Any]:
        """Stop new requests and wait until every gateway has sent every row; then flush."""
        self._closing_since = start = time.monotonic()
        waiting = self._live_gateways(start)
        while waiting and time.monotonic() - start < timeout_s:
            await asyncio.sleep(0.05)
            waiting = [r for r in waiting if not self._drained(r, start)]
        if waiting:
            logger.warning("shutdown: gateways %s still had requests or rows", waiting)
        self._close_meters()
        await asyncio.gather(*self._writes, return_exceptions=True)
        await self._db(lambda c: c.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall())
        return {
            "complete": not waiting,
            "waiting_for": waiting,
            "requests": await self._db(store.count),
        }

    def _insert_rows(self, conn: sqlite3.Connection, rows: Sequence[Values]) -> list[Values]:
        """Commit the rows the ledger does not have yet and count them; returns those.

        A replica sends a batch again when the answer to its last send was lost: the rows the
        ledger already has are left out, so each is counted once."""
        fresh = store.absent(conn, rows)
        store.insert_requests(conn, fresh)
        self._totals.add_rows(fresh)
        return fresh

    def _insert_samples(self, conn: sqlite3.Connection, samples: list[NodeSample]) -> None:
        store.insert_samples(conn, samples)
        self._totals.add_samples(samples)

    def _live_gateways(self, now: float) -> list[str]:
        return [r for r, g in self._gateways.items() if now - g.heard < GATEWAY_SILENT_S]

    def _drained(self, replica: str, since: float) -> bool:
        g = self._gateways[replica]
        b = g.batch
        return g.heard > since and b.closing and b.inflight == 0 and b.pending == 0

    # -- nodes -------------------------------------------------------------------------------

    def node_described(self, desc: NodeDescription) -> None:
        """Remember the node's name and its agent's cost profile."""
        self._write(store.node_seen, desc.node_id, desc.name, desc.cost, self._clock())

    def status(self, sample: NodeStatusSample, address: str) -> None:
        """Integrate one status message into the node's busy time and energy."""
        owner = self._meters.get(sample.node_id)
        now = self._clock()
        if owner is None or owner[0] != address:
            if owner is not None:
                last = owner[1].last_at
                if last is not None and now - last < owner[1].max_gap_s:
                    return  # a second stream to the same node: count its time once
                self.stream_ended(sample.node_id, owner[0])
            owner = self._meters[sample.node_id] = (
                address,
                EnergyMeter(sample.node_id, chunk_s=self._chunk_s, max_gap_s=self._max_gap_s),
            )
        if done := owner[1].add(now, sample.busy_seconds, sample.power_watts):
            self._write(self._insert_samples, [done])

    def stream_ended(self, node_id: str, address: str) -> None:
        """The node's status stream from `address` ended: write its partial chunk."""
        owner = self._meters.get(node_id)
        if owner is not None and owner[0] == address:
            del self._meters[node_id]
            if done := owner[1].close():
                self._write(self._insert_samples, [done])

    def recent(self, node_id: str) -> NodeSample | None:
        """The node's latest busy ratio and power, if its status is streaming."""
        owner = self._meters.get(node_id)
        return owner[1].recent() if owner else None

    async def set_cost(self, node_id: str, changes: Mapping[str, float]) -> dict[str, Any]:
        """Apply the admin's changes over the node's profile in force, and persist them."""
        record = (await self._db(store.nodes)).get(node_id)
        profile = dataclasses.replace(record.profile if record else CostProfile(), **changes)
        await self._db(store.set_override, node_id, profile, self._clock())
        return {
            "node_id": node_id,
            "profile": dataclasses.asdict(profile),
            "profile_source": "admin",
        }

    # -- reports -----------------------------------------------------------------------------

    async def cost(self, window: reports.Window) -> dict[str, Any]:
        """The cost report over a window."""
        return await self._db(self._cost, window, self._clock())

    async def usage(self, window: reports.Window, by: str) -> dict[str, Any]:
        """Requests and tokens per model, node or key over a window; rented requests apart,
        with what they cost at their provider's prices."""
        start = window.start(self._clock())
        rows = await self._db(store.usage, start, by)
        rented = await self._db(store.rented_served, start, by)
        reports.usage_spend(rows, rented, self.provider_prices(), by)
        return {"since": window.label, "by": by, "groups": rows}

    async def metrics(self) -> dict[str, Any]:
        """For /metrics (ledger/metrics.py): the request counts and, per node, live busy ratio
        and power, all-time cost, cloud-equivalent and savings; per provider, all-time cost."""
        ever = await self._db(self._ever_cost, self._clock())
        nodes = []
        for n in ever["nodes"]:
            recent = self.recent(n["node_id"])
            nodes.append(
                {
                    **n,
                    "live": None
                    if recent is None
                    else {"busy_ratio": recent.busy_ratio, "watts": recent.watts},
                }
            )
        return {
            "nodes": nodes,
            "rented": ever["rented"],
            "requests": self.requests,
            "ledger": self.ledger_health(),
        }

    async def prune(self, before: float) -> dict[str, Any]:
        """Fold the whole hours before `before` into hourly sums and delete their rows
        (ledger/retention.py); Unavailable while the ledger cannot write."""
        stored, done = await self._db(self._outage.run, retention.prune, before)
        if not stored:
            raise Unavailable(
                "the ledger cannot write now; see the controller's log", retry_after=60
            )
        logger.info("ledger pruned before %s: %s", before, done)
        return dict(done)

    async def model_prices(self, window: reports.Window) -> dict[str, float]:
        """Each model's measured $/Mtok over a window (for `/v1/models`)."""
        return await self._db(self._model_prices, window, self._clock())

    def _ever_cost(self, conn: sqlite3.Connection, now: float) -> dict[str, Any]:
        """The all-time cost report from the running totals: no scan of the ledger."""
        ever = self._totals.snapshot()
        return reports.cost_report(
            reports.CostInputs(
                label="all",
                since=None,
                now=now,
                nodes=store.nodes(conn),
                window=ever,
                ever=ever,
                prices=self.prices,
                provider_prices=self.provider_prices(),
            )
        )

    def _cost(self, conn: sqlite3.Connection, span: reports.Window, now: float) -> dict[str, Any]:
        return reports.cost_report(self._inputs(conn, span, now))

    def _model_prices(
        self, conn: sqlite3.Connection, span: reports.Window, now: float
    ) -> dict[str, float]:
        return reports.model_usd_per_mtok(self._inputs(conn, span, now, ever=False))

    def _inputs(
        self, conn: sqlite3.Connection, span: reports.Window, now: float, *, ever: bool = True
    ) -> reports.CostInputs:
        start = span.start(now)
        window = _snapshot(conn, start)
        return reports.CostInputs(
            label=span.label,
            since=start,
            now=now,
            nodes=store.nodes(conn),
            window=window,
            ever=window if start is None or not ever else _snapshot(conn, None),
            prices=self.prices,
            provider_prices=self.provider_prices(),
        )

    async def traffic(self, span: series.Span, by: str) -> dict[str, Any]:
        """Requests, tokens, TTFT and outcomes per bucket of `span`, per model, node, key or
        outcome (the dashboard's Traffic page)."""
        return series.traffic(span, await self._db(timeline.traffic, span, by))

    async def live(self, seconds: float) -> dict[str, Any]:
        """The cluster's totals over the last `seconds` (the dashboard's live figures)."""
        rows = await self._db(timeline.recent, self._clock() - seconds)
        return series.recent(rows, seconds)

    async def money(self, span: series.Span) -> dict[str, Any]:
        """Cumulative owned cost against cloud-equivalent over `span`, and the all-time report
        from the running totals (no scan of the ledger)."""
        return await self._db(self._money, span, self._clock())

    def _money(self, conn: sqlite3.Connection, span: series.Span, now: float) -> dict[str, Any]:
        inputs = series.MoneyInputs(
            span=span,
            now=now,
            served=timeline.served(conn, span),
            power=timeline.power(conn, span),
            nodes=store.nodes(conn),
            prices=self.prices,
            provider_prices=self.provider_prices(),
        )
        return {"series": series.money(inputs), "ever": self._ever_cost(conn, now)}

    # -- the ledger's thread -----------------------------------------------------------------

    async def _db(self, fn: Callable[..., T], *args: Any) -> T:
        """Run `fn(conn, *args)` on the ledger's thread."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, functools.partial(self._call, fn, *args))

    def _call(self, fn: Callable[..., T], *args: Any) -> T:
        if self._conn is None:
            raise RuntimeError("the ledger is not open")
        return fn(self._conn, *args)

    def _write(self, fn: Callable[..., Any], *args: Any) -> None:
        """Queue a write now; it runs in order with every other ledger call."""
        loop = asyncio.get_running_loop()
        write = functools.partial(self._call, self._outage.write, fn, *args)
        future = loop.run_in_executor(self._pool, write)
        self._writes.add(future)
        future.add_done_callback(self._written)

    def _written(self, future: asyncio.Future[Any]) -> None:
        self._writes.discard(future)
        if not future.cancelled() and future.exception() is not None:
            logger.error("ledger write failed", exc_info=future.exception())

    def _close_meters(self) -> None:
        for node_id, (address, _) in list(self._meters.items()):
            self.stream_ended(node_id, address)


def _nothing(conn: sqlite3.Connection, rows: Any) -> list[Values]:
    return []


def _snapshot(conn: sqlite3.Connection, since: float | None) -> reports.Snapshot:
    return reports.Snapshot(served=store.served(conn, since), power=store.power(conn, since))
