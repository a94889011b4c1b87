"""`GET /metrics`: Prometheus text, with names in the style vLLM uses (`meterless:` prefix).

Request counters and latency histograms are this gateway replica's own (each replica has its own
registry; with several replicas, each scrape shows one of them, so sum over replicas or run one).
The per-node gauges and the cost figures come from the controller and the node table, and are
the whole cluster's whichever replica answers.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from cluster.types import NodeTable
from cluster.usage import Outcome, UsageRow

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


@dataclass(frozen=True, kw_only=True)
class _Series:
    """The labelled children one request updates."""

    requests: Counter
    success: Counter | None
    prompt: Counter
    cached: Counter
    generation: Counter
    ttft: Histogram
    e2e: Histogram


class GatewayMetrics:
    """One gateway replica's registry: its request counters plus the cluster's node gauges."""

    def __init__(self) -> None:
        # No `_created` series (process-wide): they would double the text and say nothing here.
        disable_created_metrics()  # type: ignore[no-untyped-call]
        self.registry = CollectorRegistry()
        r, by = self.registry, ["model", "node"]
        self.requests = Counter(
            "meterless:requests", "Requests by how they ended.", [*by, "outcome"], registry=r
        )
        self.success = Counter(
            "meterless:request_success",
            "Requests that finished (ok or failed-over).",
            by,
            registry=r,
        )
        self.prompt = Counter("meterless:prompt_tokens", "Prompt tokens processed.", by, registry=r)
        self.cached = Counter(
            "meterless:cached_prompt_tokens",
            "Prompt tokens found in the node's prompt cache.",
            by,
            registry=r,
        )
        self.generation = Counter(
            "meterless:generation_tokens", "Tokens generated.", by, registry=r
        )
        self.ttft = Histogram(
            "meterless:time_to_first_token_seconds",
            "Gateway receipt to the first token.",
            by,
            buckets=TTFT_BUCKETS,
            registry=r,
        )
        self.e2e = Histogram(
            "meterless:e2e_request_latency_seconds",
            "Gateway receipt to the end of the request.",
            by,
            buckets=E2E_BUCKETS,
            registry=r,
        )
        self.nodes = NodeCollector()
        r.register(self.nodes)
        self._series: dict[tuple[str, str, Outcome], _Series] = {}

    def observe(self, row: UsageRow, node: str) -> None:
        """Count one finished request; `node` is the serving node's name ("" for none)."""
        s = self._series.get((row.model, node, row.outcome))
        if s is None:
            s = self._series[(row.model, node, row.outcome)] = self._labelled(row, node)
        s.requests.inc()
        if s.success is not None:
            s.success.inc()
        s.prompt.inc(row.prompt_tokens)
        s.cached.inc(row.cached_prompt_tokens)
        s.generation.inc(row.completion_tokens)
        if row.ttft_s is not None:
            s.ttft.observe(row.ttft_s)
        s.e2e.observe(row.duration_s)

    def _labelled(self, row: UsageRow, node: str) -> _Series:
        """The series of one (model, node, outcome), looked up once: `labels` is not cheap."""
        by = (row.model, node)
        ok = row.outcome in (Outcome.OK, Outcome.FAILED_OVER)
        return _Series(
            requests=self.requests.labels(*by, row.outcome.value),
            success=self.success.labels(*by) if ok else None,
            prompt=self.prompt.labels(*by),
            cached=self.cached.labels(*by),
            generation=self.generation.labels(*by),
            ttft=self.ttft.labels(*by),
            e2e=self.e2e.labels(*by),
        )

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
