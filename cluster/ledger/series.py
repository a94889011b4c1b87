"""The dashboard's time series: ranges, bucket sizes, per-bucket sums, cumulative money.

Pure: the ledger's thread runs the bounded queries (ledger/timeline.py) and hands their rows
here. A series has at most about MAX_BUCKETS points whatever the range, so a month costs the
page no more than an hour.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

from cluster.errors import InvalidRequest
from cluster.ledger import cost
from cluster.ledger.cost import NodeWindow, Power, Price, Profile, Tokens
from cluster.ledger.prices import PriceTable
from cluster.ledger.rows import RENTED_PREFIX
from cluster.ledger.store import NodeRecord

RANGES_S = {"hour": 3_600, "day": 86_400, "week": 7 * 86_400, "month": 30 * 86_400}
STEPS_S = (60, 300, 900, 1_800, 3_600, 3 * 3_600, 6 * 3_600, 12 * 3_600, 86_400, 7 * 86_400)
MAX_BUCKETS = 120
MAX_GROUPS = 8  # the biggest groups by tokens; the rest are summed as "other"
OUTCOMES = ("ok", "failed_over", "cancelled", "error")
TRAFFIC = ("requests", "prompt_tokens", "completion_tokens", "ttft_sum", "ttft_n", *OUTCOMES)


@dataclass(frozen=True)
class Span:
    """A series' range: [start, end) in unix seconds, cut into buckets of `step` seconds."""

    start: float
    end: float
    step: int

    @classmethod
    def parse(cls, name: str, start: float | None, end: float | None, now: float) -> Span:
        """`hour`, `day`, `week`, `month` up to now, or `custom` from `start` to `end`."""
        if name == "custom":
            if start is None or end is None or not 0 <= start < end:
                raise InvalidRequest("custom: give from < to, in unix seconds", param="from")
            return cls.of(start, min(end, now))
        if name not in RANGES_S:
            raise InvalidRequest(f"range: one of {', '.join([*RANGES_S, 'custom'])}", param="range")
        return cls.of(now - RANGES_S[name], now)

    @classmethod
    def of(cls, start: float, end: float) -> Span:
        """The span with the smallest step that keeps it within MAX_BUCKETS, bucket-aligned."""
        step = next((s for s in STEPS_S if (end - start) / s <= MAX_BUCKETS), STEPS_S[-1])
        return cls(math.floor(start / step) * step, end, step)

    def buckets(self) -> list[int]:
        """Every bucket's start, in order (empty buckets included: a chart needs them)."""
        return list(range(int(self.start), math.ceil(self.end), self.step))


def traffic(span: Span, rows: Iterable[Sequence[Any]]) -> dict[str, Any]:
    """Per group, one value per bucket of each TRAFFIC sum; rows are (bucket, group, *TRAFFIC).
    Groups past MAX_GROUPS (by tokens) are merged into `other`."""
    buckets = span.buckets()
    where = {b: i for i, b in enumerate(buckets)}
    groups: dict[str, dict[str, list[float]]] = {}
    for bucket, group, *values in rows:
        if bucket not in where:
            continue
        series = groups.setdefault(_label(group), {k: [0.0] * len(buckets) for k in TRAFFIC})
        for k, v in zip(TRAFFIC, values, strict=True):
            series[k][where[bucket]] += v or 0
    return {
        "start": span.start,
        "end": span.end,
        "step": span.step,
        "buckets": buckets,
        "groups": _top(groups),
    }


def _top(groups: dict[str, dict[str, list[float]]]) -> dict[str, dict[str, list[float]]]:
    def size(name: str) -> float:
        return sum(groups[name]["prompt_tokens"]) + sum(groups[name]["completion_tokens"])

    ranked = sorted(groups, key=lambda name: (-size(name), name))
    kept = {name: groups[name] for name in ranked[:MAX_GROUPS]}
    for name in ranked[MAX_GROUPS:]:
        other = kept.setdefault("other", {k: [0.0] * len(v) for k, v in groups[name].items()})
        for k, v in groups[name].items():
            other[k] = [a + b for a, b in zip(other[k], v, strict=True)]
    return kept


def _label(group: object) -> str:
    return "(none)" if group is None else str(group)


def percentiles(values: Sequence[float], qs: Sequence[float]) -> list[float | None]:
    """The `qs` quantiles (0..1) of `values`, nearest rank; None for each when there are none."""
    ordered = sorted(values)
    if not ordered:
        return [None for _ in qs]
    return [ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))] for q in qs]


def recent(rows: Sequence[Sequence[Any]], seconds: float) -> dict[str, Any]:
    """Cluster totals over the last `seconds`; rows are (completion tokens, ttft_s, outcome)."""
    ttfts = [t for _, t, _ in rows if t is not None]
    p50, p95 = percentiles(ttfts, (0.5, 0.95))
    return {
        "seconds": seconds,
        "requests": len(rows),
        "requests_per_min": len(rows) * 60 / seconds,
        "tokens_per_s": sum(c for c, _, _ in rows) / seconds,
        "errors": sum(o == "error" for _, _, o in rows),
        "ttft_p50_s": p50,
        "ttft_p95_s": p95,
    }


@dataclass(frozen=True, kw_only=True)
class MoneyInputs:
    """What the money series is priced from: tokens per (bucket, node, model), power per
    (bucket, node), the nodes' records, and the price tables."""

    span: Span
    now: float
    served: Sequence[tuple[int, str, str, Tokens]]
    power: Mapping[tuple[int, str], Power]
    nodes: Mapping[str, NodeRecord]
    prices: PriceTable
    provider_prices: Mapping[str, Mapping[str, Price]]


def money(inputs: MoneyInputs) -> dict[str, Any]:
    """Cumulative owned cost (amortisation + energy), cloud-equivalent and rented spend over the
    span, one point per bucket, in US dollars."""
    buckets = inputs.span.buckets()
    owned, cloud, rented = (Fraction(0),) * 3
    out: dict[str, list[float]] = {"owned_usd": [], "cloud_usd": [], "rented_usd": []}
    for b in buckets:
        end = min(b + inputs.span.step, inputs.now)
        for node_id, record in inputs.nodes.items():
            if node_id.startswith(RENTED_PREFIX):
                continue
            c = _bucket_cost(inputs, b, end, node_id, record)
            owned += c.total_usd
            cloud += c.cloud_usd
        rented += _rented_usd(inputs, b)
        for key, value in (("owned_usd", owned), ("cloud_usd", cloud), ("rented_usd", rented)):
            out[key].append(float(value))
    return {"start": inputs.span.start, "step": inputs.span.step, "buckets": buckets, **out}


def _bucket_cost(
    inputs: MoneyInputs, start: float, end: float, node_id: str, record: NodeRecord
) -> cost.NodeCost:
    mine = [(m, t) for b, n, m, t in inputs.served if b == start and n == node_id]
    window = NodeWindow(
        owned_s=Fraction(max(0.0, end - max(start, record.first_seen))),
        power=inputs.power.get((int(start), node_id), Power()),
        tokens=sum((t for _, t in mine), Tokens()),
        cloud_usd=sum((cost.cloud_usd(inputs.prices.price(m), t) for m, t in mine), Fraction(0)),
    )
    return cost.node_cost(Profile.of(record.profile), window)


def _rented_usd(inputs: MoneyInputs, bucket: int) -> Fraction:
    usd = Fraction(0)
    for b, node_id, model, tokens in inputs.served:
        if b == bucket and node_id.startswith(RENTED_PREFIX):
            price = inputs.provider_prices.get(node_id.removeprefix(RENTED_PREFIX), {}).get(model)
            usd += cost.cloud_usd(price, tokens) if price else 0
    return usd


def traffic_csv(series: Mapping[str, Any]) -> str:
    """The traffic series as CSV: one line per (bucket, group), ISO-free unix seconds."""
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["bucket_start", "group", *TRAFFIC])
    for name, values in series["groups"].items():
        for i, bucket in enumerate(series["buckets"]):
            writer.writerow([bucket, name, *(_num(values[k][i]) for k in TRAFFIC)])
    return out.getvalue()


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else f"{x:.6f}"
