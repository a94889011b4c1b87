"""Where a gateway request's time outside the node goes: in, across to the node, and out.

The gateway's ledger row says when its code took the request (after reading and checking the
body, when it makes the request's tally) and how long the node's first token took to reach it
from then. With the client's own times that splits each request's time outside the node
(Timing.outside) into three parts that add up to it:

- `in`: from the client's send to the gateway's code taking the request: the client, the
  kernel, uvicorn and Serve's per-request tasks, and the gateway's parsing and admission;
- `node hop`: from then to the first token at the gateway, less the node's own time: routing,
  the gRPC call to the node and its first answer back. The direct path's whole time outside the
  node is this same hop, made by the client;
- `out`: from the first token at the gateway to the client's: the SSE frame and its way back.

The gateway's clock is read as wall time (time.time) and turned into the client's perf_counter
with one offset: both clocks advance at the same rate on one machine.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from bench.common import Timing, ms, percentile

PARTS = ("in", "node hop", "out")
TAIL_SHARE = 0.01  # the slowest 1% by time outside the node, for the tail's row


def parts(t: Timing) -> tuple[float, float, float] | None:
    """A request's (in, node hop, out) in seconds; None unless it has the gateway's figures."""
    if t.gateway_start is None or t.gateway_ttft is None or t.node_ttft is None:
        return None
    reached = t.gateway_start + t.gateway_ttft  # the first token at the gateway
    return (t.gateway_start - t.started, t.gateway_ttft - t.node_ttft, t.first - reached)


def parts_rows(label: str, paths: Mapping[str, Sequence[Timing]]) -> list[list[object]]:
    """Per path, the p50 of each part and the parts' means over its slowest 1% (at least one
    request). The direct path's time outside the node goes in the `node hop` column."""
    rows: list[list[object]] = []
    for name, timings in paths.items():
        if name.startswith("direct"):
            split = [(math.nan, t.outside, math.nan) for t in timings if not math.isnan(t.outside)]
        else:
            split = [p for t in timings if (p := parts(t)) is not None]
        if not split:
            continue
        slowest = sorted(split, key=_total)[-max(1, round(len(split) * TAIL_SHARE)) :]
        medians = [percentile([s[i] for s in split], 50) for i in range(3)]
        tails = [sum(s[i] for s in slowest) / len(slowest) for i in range(3)]
        rows.append(
            [
                f"{name} {label}",
                len(split),
                *(_cell(v) for v in medians),
                len(slowest),
                ms(sum(map(_total, slowest)) / len(slowest)),
                *(_cell(v) for v in tails),
            ]
        )
    return rows


def _total(split: tuple[float, float, float]) -> float:
    return sum(v for v in split if not math.isnan(v))


def _cell(seconds: float) -> str:
    return "" if math.isnan(seconds) else ms(seconds)


TITLE = (
    "where the time outside the node goes (bench/gateway_parts.py): in = the client's "
    "send to the gateway's code taking the request; node hop = from then to the first "
    "token at the gateway, less the node's own (direct: all its time outside the node); "
    "out = the first token at the gateway to the client. p50 of each, and the means of "
    "each over the slowest 1% by time outside the node"
)
HEADERS = [
    "path",
    "known",
    *(f"{p} p50 ms" for p in PARTS),
    "slowest",
    "their outside ms",
    *(f"their {p} ms" for p in PARTS),
]
