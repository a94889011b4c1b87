"""`GET /metrics`: Prometheus text, with names in the style vLLM uses (`meterless:` prefix).

The request counters and latency histograms are the whole cluster's: the controller counts every
usage row as it commits it (RequestCounts, in ledger/service.py), so they lag the requests by a
replica's batch interval (half a second) and any gateway replica shows them all. The per-node
gauges and the cost figures come from the controller and the node table too. A gateway replica
only renders them (render), on each scrape.
"""

from __future__ import annotations

import bisect
import itertools
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar, cast

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from prometheus_client.utils import INF, floatToGoString

from cluster.ledger.rows import RENTED_PREFIX, Outcome, Values
from cluster.types import NodeTable

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
TTFT_BUCKETS = (
    0.001,
    0.005,
    0.01,
    0.02,
    0.04,
    0.06,
    0.08,
    0.1,
    0.25,
    0.5,
    0.75,
    1.0,
    2.5,
    5.0,
    7.5,
    10.0,
    20.0,
    40.0,
    80.0,
)
E2E_BUCKETS = (
    0.3,
    0.5,
    0.8,
    1.0,
    1.5,
    2.0,
    2.5,
    5.0,
    10.0,
    15.0,
    20.0,
    30.0,
    40.0,
    50.0,
    60.0,
    120.0,
    240.0,
    480.0,
    960.0,
)


class _Histogram:
    """Bucket counts and a sum: what a Prometheus histogram exports, kept as plain numbers."""

    __slots__ = ("bounds", "counts", "total")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)  # the last one is +Inf
        self.total = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += 1  # the first bound >= value
        self.total += value

    def add(self, other: _Histogram) -> None:
        """Add another histogram's counts (with the same bounds) to this one."""
        self.counts = [a + b for a, b in zip(self.counts, other.counts, strict=True)]
        self.total += other.total

    def buckets(self) -> list[tuple[str, float]]:
        """Cumulative counts by upper bound, as the exposition wants them."""
        bounds, cumulative = (*self.bounds, INF), itertools.accumulate(self.counts)
        pairs = zip(bounds, cumulative, strict=True)
        return [(floatToGoString(le), c) for le, c in pairs]  # type: ignore[no-untyped-call]


@dataclass(kw_only=True)
class _Series:
    """One (model, node)'s counts."""

    success: int = 0
    prompt: int = 0
    cached: int = 0
    generation: int = 0
    ttft: _Histogram = field(default_factory=lambda: _Histogram(TTFT_BUCKETS))
    e2e: _Histogram = field(default_factory=lambda: _Histogram(E2E_BUCKETS))

    def add(self, other: _Series) -> None:
        """Add another series' counts to this one."""
        self.success += other.success
        self.prompt += other.prompt
        self.cached += other.cached
        self.generation += other.generation
        self.ttft.add(other.ttft)
        self.e2e.add(other.e2e)


_SUCCESS = frozenset((Outcome.OK.value, Outcome.FAILED_OVER.value))


class RequestCounts:
    """The cluster's request counters, by model and serving node id, from the ledger's rows.

    A row adds to plain integers and bucket counts; the families are built only when /metrics is
    scraped. It travels to the gateway that renders them as itself (pickled).
    """

    def __init__(self) -> None:
        self._requests: dict[tuple[str, str, str], int] = {}  # by model, node id, outcome
        self._series: dict[tuple[str, str], _Series] = {}  # by model, node id

    def observe(self, rows: Iterable[Values]) -> None:
        """Count finished requests (their rows' values, UsageRow.values)."""
        requests, series = self._requests, self._series
        for row in rows:
            (
                _,
                _,
                _,
                model,
                node,
                _,
                _,
                prompt,
                cached,
                completion,
                ttft,
                duration,
                outcome,
                *_,
            ) = row
            key = (model, node or "", outcome)
            requests[key] = requests.get(key, 0) + 1
            s = series.get(key[:2])
            if s is None:
                s = series[key[:2]] = _Series()
            if outcome in _SUCCESS:
                s.success += 1
            s.prompt += prompt
            s.cached += cached
            s.generation += completion
            if ttft is not None:
                s.ttft.observe(ttft)
            s.e2e.observe(duration)

    def families(self, names: Mapping[str, str]) -> Iterator[Metric]:
        """The request families, labelled by node name (`names`: node id -> name; the id where
        a node has none); nodes under one name are summed. Requests a provider served are the
        `rented_` families', labelled by provider, not the nodes'."""
        requests: dict[tuple[str, str, str], int] = {}
        for (model, node, outcome), n in self._requests.items():
            key = (model, names.get(node, node), outcome)
            requests[key] = requests.get(key, 0) + n
        series: dict[tuple[str, str], _Series] = {}
        for (model, node), s in self._series.items():
            series.setdefault((model, names.get(node, node)), _Series()).add(s)
        yield from _families(
            "meterless:",
            "node",
            {k: n for k, n in requests.items() if not _rented(k[1])},
            {k: s for k, s in series.items() if not _rented(k[1])},
        )
        rented = {_provider(k): n for k, n in requests.items() if _rented(k[1])}
        if rented:
            by_provider = {_provider(k): s for k, s in series.items() if _rented(k[1])}
            yield from _families("meterless:rented_", "provider", rented, by_provider)


K = TypeVar("K", tuple[str, str], tuple[str, str, str])


def _rented(node: str) -> bool:
    return node.startswith(RENTED_PREFIX)


def _provider(key: K) -> K:
    """The key with its node id (`provider:NAME`) made the provider's name."""
    return cast(K, (key[0], key[1].removeprefix(RENTED_PREFIX), *key[2:]))


def _families(
    prefix: str,
    label: str,
    requests: Mapping[tuple[str, str, str], int],
    series: Mapping[tuple[str, str], _Series],
) -> Iterator[Metric]:
    """The request families under `prefix`, by model and `label` (node, or provider)."""
    by = ["model", label]
    family = CounterMetricFamily(
        f"{prefix}requests", "Requests by how they ended.", labels=[*by, "outcome"]
    )
    for labels3, n in requests.items():
        family.add_metric(list(labels3), n)
    yield family
    counters = {
        "success": CounterMetricFamily(
            f"{prefix}request_success", "Requests that finished (ok or failed-over).", labels=by
        ),
        "prompt": CounterMetricFamily(
            f"{prefix}prompt_tokens", "Prompt tokens processed.", labels=by
        ),
        "cached": CounterMetricFamily(
            f"{prefix}cached_prompt_tokens", "Prompt tokens found in a prompt cache.", labels=by
        ),
        "generation": CounterMetricFamily(
            f"{prefix}generation_tokens", "Tokens generated.", labels=by
        ),
    }
    histograms = {
        "ttft": HistogramMetricFamily(
            f"{prefix}time_to_first_token_seconds", "Gateway receipt to the first token.", labels=by
        ),
        "e2e": HistogramMetricFamily(
            f"{prefix}e2e_request_latency_seconds",
            "Gateway receipt to the end of the request.",
            labels=by,
        ),
    }
    for labels, s in series.items():
        for name, counter in counters.items():
            counter.add_metric(list(labels), getattr(s, name))
        for name, hist in histograms.items():
            h: _Histogram = getattr(s, name)
            hist.add_metric(list(labels), h.buckets(), h.total)
    yield from counters.values()
    yield from histograms.values()


def render(snapshot: Mapping[str, Any], table: NodeTable) -> bytes:
    """The exposition text from the ledger service's snapshot (`metrics`) and a node table."""
    registry = CollectorRegistry()
    registry.register(_Requests(snapshot, table))
    registry.register(NodeCollector(snapshot, table))
    registry.register(_Ledger(snapshot.get("ledger")))
    registry.register(_RentedCost(snapshot.get("rented", [])))
    return generate_latest(registry)


class _Ledger(Collector):
    """Whether the ledger writes, and the rows waiting in memory while it cannot."""

    def __init__(self, health: Mapping[str, Any] | None) -> None:
        self.health = health

    def collect(self) -> Iterator[Metric]:
        """The ledger families (none without a ledger)."""
        if self.health is None:
            return
        h = self.health
        yield GaugeMetricFamily(
            "meterless:ledger_writable",
            "1 while the ledger commits, 0 while it cannot (disk full, read-only, locked).",
            value=int(h["writable"]),
        )
        yield GaugeMetricFamily(
            "meterless:ledger_rows_waiting",
            "Rows and samples made but not yet committed, held in memory.",
            value=h["rows_waiting"],
        )
        yield CounterMetricFamily(
            "meterless:ledger_write_errors", "Ledger writes that failed.", value=h["write_errors"]
        )
        yield CounterMetricFamily(
            "meterless:ledger_rows_dropped",
            "Rows and samples given up because the memory that held them was full.",
            value=h["rows_dropped"],
        )


class _RentedCost(Collector):
    """What each provider's requests cost at its list prices, ever (the cost report's `rented`)."""

    def __init__(self, rented: list[Mapping[str, Any]]) -> None:
        self.rented = rented

    def collect(self) -> Iterator[Metric]:
        """The rented cost family (none before a provider served a request)."""
        if not self.rented:
            return
        cost = CounterMetricFamily(
            "meterless:rented_cost_usd",
            "Rented requests at their provider's list prices, ever (unpriced models count 0).",
            labels=["provider"],
        )
        for r in self.rented:
            cost.add_metric([r["provider"]], r["cost_usd"])
        yield cost


class _Requests(Collector):
    """The snapshot's request counts, by node name."""

    def __init__(self, snapshot: Mapping[str, Any], table: NodeTable) -> None:
        self.counts: RequestCounts = snapshot.get("requests") or RequestCounts()
        self.names = {n["node_id"]: n["name"] for n in snapshot.get("nodes", [])}
        self.names.update((n.node_id, n.name) for n in table.nodes)

    def collect(self) -> Iterator[Metric]:
        """The request families."""
        return self.counts.families(self.names)


class NodeCollector(Collector):
    """Per-node gauges from the controller's snapshot and the node table."""

    def __init__(self, snapshot: Mapping[str, Any], table: NodeTable) -> None:
        self.snapshot, self.table = snapshot, table

    def collect(self) -> Iterator[Metric]:
        """The node families, one sample per node."""
        tps = GaugeMetricFamily(
            "meterless:node_decode_tokens_per_second",
            "Measured decode tokens/s (the starting estimate until measured).",
            labels=["node", "measured"],
        )
        for n in self.table.nodes:
            tps.add_metric([n.name, str(n.tps_measured).lower()], n.decode_tps)
        busy = GaugeMetricFamily(
            "meterless:node_busy_ratio",
            "Share of the last ~10 s with a generation running.",
            labels=["node"],
        )
        watts = GaugeMetricFamily(
            "meterless:node_power_watts",
            "Power drawn: measured, else from the configured watts.",
            labels=["node", "source"],
        )
        cost = CounterMetricFamily(
            "meterless:cost_usd", "Hardware write-off plus energy, ever.", labels=["node"]
        )
        cloud = CounterMetricFamily(
            "meterless:cloud_equivalent_usd",
            "The same tokens at the reference cloud prices, ever.",
            labels=["node"],
        )
        savings = GaugeMetricFamily(
            "meterless:savings_usd",
            "Cloud-equivalent minus cost, ever (it can fall).",
            labels=["node"],
        )
        for n in self.snapshot.get("nodes", []):
            _node_samples(n, busy, watts, cost, cloud, savings)
        yield from (tps, busy, watts, cost, cloud, savings)


def _node_samples(
    n: Mapping[str, Any],
    busy: GaugeMetricFamily,
    watts: GaugeMetricFamily,
    cost: CounterMetricFamily,
    cloud: CounterMetricFamily,
    savings: GaugeMetricFamily,
) -> None:
    name = n["name"]
    cost.add_metric([name], n["cost_usd"]["total"])
    cloud.add_metric([name], n["cloud_equivalent_usd"])
    savings.add_metric([name], n["savings_usd"])
    live = n.get("live")
    if live is None:
        return
    busy.add_metric([name], live["busy_ratio"])
    if live["watts"] is not None:
        watts.add_metric([name, "measured"], live["watts"])
    else:
        p = n["profile"]
        estimate = p["idle_watts"] + live["busy_ratio"] * (p["busy_watts"] - p["idle_watts"])
        watts.add_metric([name, "configured"], estimate)
