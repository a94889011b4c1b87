"""`GET /metrics`: Prometheus text, with names in the style vLLM uses (`meterless:` prefix).

Request counters and latency histograms are this gateway replica's own (each replica has its own
registry; with several replicas, each scrape shows one of them, so sum over replicas or run one).
The per-node gauges and the cost figures come from the controller and the node table, and are
the whole cluster's whichever replica answers.
"""

from __future__ import annotations

import bisect
import itertools
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from prometheus_client.utils import INF, floatToGoString

from cluster.types import NodeTable
from cluster.usage import Outcome, Values

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

    def buckets(self) -> list[tuple[str, float]]:
        """Cumulative counts by upper bound, as the exposition wants them."""
        bounds, cumulative = (*self.bounds, INF), itertools.accumulate(self.counts)
        return [(floatToGoString(le), c) for le, c in zip(bounds, cumulative, strict=True)]


@dataclass(kw_only=True)
class _Series:
    """One (model, node)'s counts."""

    success: int = 0
    prompt: int = 0
    cached: int = 0
    generation: int = 0
    ttft: _Histogram = field(default_factory=lambda: _Histogram(TTFT_BUCKETS))
    e2e: _Histogram = field(default_factory=lambda: _Histogram(E2E_BUCKETS))


_SUCCESS = frozenset((Outcome.OK.value, Outcome.FAILED_OVER.value))


class GatewayMetrics(Collector):
    """One gateway replica's request counters, plus the cluster's node gauges.

    A request adds to plain integers and bucket counts, and the families are built only when
    /metrics is scraped: a labelled prometheus_client child takes a lock and several calls per
    update, and seven updates a request were a good part of what the ledger added to it.
    """

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.nodes = NodeCollector()
        self.registry.register(self)
        self.registry.register(self.nodes)
        self._requests: dict[tuple[str, str, str], int] = {}  # by model, node, outcome
        self._series: dict[tuple[str, str], _Series] = {}

    def observe(self, row: Values, node: str) -> None:
        """Count one finished request (its row's values, UsageRow.values); `node` is the
        serving node's name ("" for none)."""
        _, _, _, model, _, _, _, prompt, cached, completion, ttft, duration, outcome, _ = row
        key = (model, node, outcome)
        self._requests[key] = self._requests.get(key, 0) + 1
        s = self._series.get(key[:2])
        if s is None:
            s = self._series[key[:2]] = _Series()
        if outcome in _SUCCESS:
            s.success += 1
        s.prompt += prompt
        s.cached += cached
        s.generation += completion
        if ttft is not None:
            s.ttft.observe(ttft)
        s.e2e.observe(duration)

    def collect(self) -> Iterator[Metric]:
        """The request families: counters by (model, node), requests also by outcome."""
        by = ["model", "node"]
        requests = CounterMetricFamily(
            "meterless:requests", "Requests by how they ended.", labels=[*by, "outcome"]
        )
        for (model, node, outcome), n in self._requests.items():
            requests.add_metric([model, node, outcome], n)
        yield requests
        counters = {
            "success": CounterMetricFamily(
                "meterless:request_success", "Requests that finished (ok or failed-over).",
                labels=by),
            "prompt": CounterMetricFamily(
                "meterless:prompt_tokens", "Prompt tokens processed.", labels=by),
            "cached": CounterMetricFamily(
                "meterless:cached_prompt_tokens",
                "Prompt tokens found in the node's prompt cache.", labels=by),
            "generation": CounterMetricFamily(
                "meterless:generation_tokens", "Tokens generated.", labels=by),
        }
        histograms = {
            "ttft": HistogramMetricFamily(
                "meterless:time_to_first_token_seconds", "Gateway receipt to the first token.",
                labels=by),
            "e2e": HistogramMetricFamily(
                "meterless:e2e_request_latency_seconds",
                "Gateway receipt to the end of the request.", labels=by),
        }
        for labels, s in self._series.items():
            for name, family in counters.items():
                family.add_metric(list(labels), getattr(s, name))
            for name, hist in histograms.items():
                h: _Histogram = getattr(s, name)
                hist.add_metric(list(labels), h.buckets(), h.total)
        yield from counters.values()
        yield from histograms.values()

    def render(self, snapshot: Mapping[str, Any], table: NodeTable) -> bytes:
        """The exposition text, with the node gauges from `snapshot` and `table`."""
        self.nodes.snapshot, self.nodes.table = snapshot, table
        return generate_latest(self.registry)


class NodeCollector(Collector):
    """Per-node gauges from the last controller snapshot and node table."""

    def __init__(self) -> None:
        self.snapshot: Mapping[str, Any] = {"nodes": []}
        self.table = NodeTable()

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
