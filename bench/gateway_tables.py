"""The tables bench.gateway prints, from each path's Series of timings and CPU clocks.

- latency: per path, TTFT and ITL at p50 and p99, tokens per request and the mean requests in
  flight. ITL is each request's mean gap between tokens after the first.
- added over direct: each HTTP path's TTFT and ITL less the direct path's, with the ratios.
- outside the node: each request's TTFT less the node's own (the node's receipt of the request
  to its first token, which the node reports when it finishes: the direct path gets it in its
  stream, the gateway path from the ledger's row for the request). At 32 streams the engine
  steps every 60-100 ms here, and a request's TTFT depends on where its arrival falls between
  two steps: that noise is larger than the targets. What is left is the time the request spent
  outside the node, in the client, the network and, on the gateway path, the gateway; the
  difference between the paths is what the gateway adds, without the engine's steps. A request
  the gateway delays reaches the node later, which this counts in full; what it leaves out is
  only how the engine's next step happened to fall.
- where the time outside the node goes: in, node hop and out (bench/gateway_parts.py).
- with `--proxy`, the ingress hop and the replica's part of the added time.
- CPU per request, read from /proc for the agent, for everything `cluster up` started (Ray, the
  gateway) and for the client, and how busy the cores were.

Targets: added p50 TTFT <= 2 ms and added p99 TTFT <= 5 ms. Each added figure comes with a 95%
interval from a paired block bootstrap (see arrivals.paired_interval): PASS when all of it is
within the target, MISS when none of it is, open when it straddles the target.
"""

from __future__ import annotations

import argparse
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from bench import gateway_parts
from bench.arrivals import interval_verdict, paired_interval
from bench.common import Timing, ms, percentile, table

ADDED_P50_MS, ADDED_P99_MS = 2.0, 5.0


@dataclass
class Series:
    """The timings of one path at one concurrency, and the CPU its blocks used."""

    timings: list[Timing] = field(default_factory=list)
    agent_s: float = 0.0  # CPU seconds of the agent
    cluster_s: float = 0.0  # of `cluster up` and everything it started
    client_s: float = 0.0  # of this process
    machine_busy: int = 0  # clock ticks the whole machine was busy, other work included
    machine_total: int = 0
    wall_s: float = 0.0
    blocks: list[list[Timing]] = field(default_factory=list)  # the same timings, by block
    flight_s: float = 0.0  # the counted requests' summed durations
    span_s: float = 0.0  # each block's first counted start to its last end, summed


def _p(series: Series, q: float, what: str = "ttft") -> float:
    return percentile([getattr(t, what) for t in series.timings], q)


def in_flight(s: Series) -> float:
    """Mean counted requests in flight while they ran (Little's law: their summed durations
    over the spans from each block's first start to its last end). Warm-up requests still
    running at a block's start are not counted, so this is slightly low."""
    return s.flight_s / s.span_s if s.span_s else 0.0


def latency_rows(label: str, results: dict[str, Series]) -> list[list[object]]:
    """Per path: requests, TTFT p50/p99, ITL p50/p99, tokens per request, mean in flight."""
    return [
        [
            f"{name} {label}",
            len(s.timings),
            ms(_p(s, 50)),
            ms(_p(s, 99)),
            ms(_p(s, 50, "itl")),
            ms(_p(s, 99, "itl")),
            f"{sum(t.tokens for t in s.timings) / max(len(s.timings), 1):.1f}",
            f"{in_flight(s):.1f}",
        ]
        for name, s in results.items()
    ]


def added_rows(label: str, results: dict[str, Series]) -> list[list[object]]:
    """Per HTTP path: its TTFT and ITL minus direct's, with 95% intervals and verdicts, and
    the ratios."""
    a = results["direct"]
    rows: list[list[object]] = []
    for name, b in results.items():
        if name == "direct":
            continue
        rows.append(
            [
                f"{name} {label}",
                *_added(a, b, "ttft"),
                f"{_p(b, 50) / _p(a, 50):.2f}",
                f"{_p(b, 99) / _p(a, 99):.2f}",
                ms(_p(b, 50, "itl") - _p(a, 50, "itl")),
                f"{_p(b, 50, 'itl') / _p(a, 50, 'itl'):.2f}",
            ]
        )
    return rows


def outside_rows(label: str, results: dict[str, Series]) -> list[list[object]]:
    """Per path: TTFT less the node's own (receipt to first token) at p50 and p99, and what
    each path adds to it over direct, with 95% intervals and verdicts."""
    a = results["direct"]
    rows: list[list[object]] = []
    for name, b in results.items():
        known = sum(t.node_ttft is not None for t in b.timings)
        row: list[object] = [
            f"{name} {label}",
            known,
            ms(_p(b, 50, "outside")),
            ms(_p(b, 99, "outside")),
        ]
        rows.append(row + ([""] * 6 if name == "direct" else _added(a, b, "outside")))
    return rows


def _added(a: Series, b: Series, what: str) -> list[object]:
    """b's p50 and p99 of a Timing figure minus a's, each with its 95% interval and verdict."""
    cells: list[object] = []
    for q, target in ((50, ADDED_P50_MS), (99, ADDED_P99_MS)):
        low, high = paired_interval(a.blocks, b.blocks, q, what=what)
        cells += [
            ms(_p(b, q, what) - _p(a, q, what)),
            f"{ms(low)} to {ms(high)}",
            interval_verdict(low, high, target),
        ]
    return cells


def _busy(s: Series) -> tuple[float, float]:
    """(share of all cores our processes used, share the whole machine used)."""
    cores = os.cpu_count() or 1
    ours = (s.agent_s + s.cluster_s + s.client_s) / (s.wall_s * cores) if s.wall_s else 0.0
    machine = s.machine_busy / s.machine_total if s.machine_total else 0.0
    return ours, machine


def cpu_rows(label: str, results: dict[str, Series]) -> list[list[object]]:
    """CPU ms per request in each process group, and how busy the cores were."""
    rows: list[list[object]] = []
    for name, s in results.items():
        n = max(len(s.timings), 1)
        ours, machine = _busy(s)
        rows.append(
            [
                f"{name} {label}",
                ms(s.agent_s / n),
                ms(s.cluster_s / n),
                ms(s.client_s / n),
                f"{ours:.0%}",
                f"{machine:.0%}",
            ]
        )
    return rows


def split_rows(label: str, results: dict[str, Series]) -> list[list[object]]:
    """Where the gateway's extra TTFT and CPU go: the hop into the replica, and the replica."""
    if "no-proxy" not in results:
        return []
    d, g, r = (results[n] for n in ("direct", "gateway", "no-proxy"))

    def cpu(s: Series) -> float:
        return s.cluster_s / max(len(s.timings), 1)

    return [
        [label, "ingress hop (gateway - no-proxy)", ms(_p(g, 50) - _p(r, 50)), ms(cpu(g) - cpu(r))],
        [
            label,
            "replica: HTTP, route, gRPC, SSE (no-proxy - direct)",
            ms(_p(r, 50) - _p(d, 50)),
            ms(cpu(r) - cpu(d)),
        ],
    ]


def contention_note(label: str, results: dict[str, Series]) -> str | None:
    """A warning when the cores were saturated while the gateway path ran."""
    ours, machine = _busy(results["gateway"])
    if machine < 0.8:
        return None
    return (
        f"note: at {label} the cores were {machine:.0%} busy during the gateway "
        f"path ({ours:.0%} from the engine, Ray and this client, the rest from other work "
        "on this machine): every extra process hop waits for a core, so these figures "
        "measure CPU contention as much as the gateway's own latency."
    )


def report(results: dict[str, dict[str, Series]], args: argparse.Namespace) -> None:
    """Print the latency, overhead and CPU tables and the verdicts."""
    ingress = "Serve's HTTP proxy" if args.proxy else "the gateway replica itself"
    print(
        f"\nstreamed chat completions, max_tokens={args.max_tokens}, temperature 0; "
        f"direct = NodeClient over gRPC; gateway = HTTP/SSE to the endpoint ({ingress})"
        + ("; no-proxy = HTTP/SSE to the gateway replica's own port" if args.proxy else "")
    )
    rows = [row for s, r in results.items() for row in latency_rows(s, r)]
    print(
        table(
            [
                "path",
                "requests",
                "TTFT p50 ms",
                "TTFT p99 ms",
                "ITL p50 ms",
                "ITL p99 ms",
                "tokens/req",
                "in flight",
            ],
            rows,
        )
    )
    print(
        f"\nadded over direct (path - direct); targets for `gateway`: p50 <= {ADDED_P50_MS:g} "
        f"ms, p99 <= {ADDED_P99_MS:g} ms; PASS when the 95% interval is within the target, "
        "MISS when it is all over, open when it straddles it"
    )
    print(
        table(
            [
                "path",
                "+TTFT p50 ms",
                "95% interval",
                "",
                "+TTFT p99 ms",
                "95% interval",
                "",
                "p50 ratio",
                "p99 ratio",
                "+ITL p50 ms",
                "ITL ratio",
            ],
            [row for s, r in results.items() for row in added_rows(s, r)],
        )
    )
    print(
        "\noutside the node: each request's TTFT less the node's own (its receipt of the "
        "request to its first token, as it reported it; through the gateway, from the ledger), "
        "so without the wait for the engine's next step; the same targets"
    )
    print(
        table(
            [
                "path",
                "known",
                "p50 ms",
                "p99 ms",
                "+p50 ms",
                "95% interval",
                "",
                "+p99 ms",
                "95% interval",
                "",
            ],
            [row for s, r in results.items() for row in outside_rows(s, r)],
        )
    )
    print(f"\n{gateway_parts.TITLE}")
    print(
        table(
            gateway_parts.HEADERS,
            [
                row
                for s, r in results.items()
                for row in gateway_parts.parts_rows(s, {n: x.timings for n, x in r.items()})
            ],
        )
    )
    if split := [row for s, r in results.items() for row in split_rows(s, r)]:
        print(
            "\nwhere the added time goes (TTFT p50 difference; CPU ms per request in `cluster "
            "up`'s processes, difference)"
        )
        print(table(["streams", "part", "+TTFT p50 ms", "+CPU ms/request"], split))
    print(
        "\nCPU ms per request over each path's blocks; busy = share of all cores "
        "(ours: agent + cluster up + client; machine: every process)"
    )
    print(
        table(
            ["path", "agent", "cluster up (Ray+gateway)", "client", "busy ours", "busy machine"],
            [row for s, r in results.items() for row in cpu_rows(s, r)],
        )
    )
    for label, r in results.items():
        if note := contention_note(label, r):
            print(note)


def save(results: dict[str, dict[str, Series]], path: Path) -> None:
    """Write every counted request's timings, by block, as JSON, and say what is where."""
    path.write_text(
        json.dumps(
            {
                label: {
                    name: [
                        [
                            [
                                t.started,
                                t.first,
                                t.last,
                                t.tokens,
                                t.node_ttft,
                                t.gateway_start,
                                t.gateway_ttft,
                            ]
                            for t in block
                        ]
                        for block in series.blocks
                    ]
                    for name, series in r.items()
                }
                for label, r in results.items()
            }
        )
    )
    print(
        f"timings written to {path} ({{streams and arrival: {{path: [block: "
        "[[started, first token, last token, tokens, node's TTFT, gateway's start, gateway's "
        "TTFT], ...], ...]}}, perf_counter seconds)"
    )
