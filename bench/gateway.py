"""What the gateway adds to a streamed chat completion: TTFT and ITL, direct and through it.

    .venv/bin/python bench/gateway.py [--quick] [--max-tokens 16] [--requests 200] [--rounds 10]
                                      [--arrival closed|burst|both]
                                      [--client lean|httpx|both] [--proxy] [--no-replica-path]
                                      [--layout head-alone|node-alone|shared] [--control]

One agent serving `demo` and one `cluster up` in front of it. Path `direct` streams straight to
the agent with the gateway's own client (NodeClient.generate, gRPC); path `gateway` streams
through the endpoint (HTTP/SSE) with bench/lean_http.py, and path `gateway/httpx` the same with
httpx, the openai client's HTTP library. The client shares the two cores with what it measures,
and httpx's own work (about 7 ms more CPU per request than the lean client on 2 cores) is the
client's, not the gateway's: `gateway` is the figure for the targets, `gateway/httpx` shows
what a client built on httpx sees on top (`--client` picks one or both). All send the same
greedy chat requests, so the engine does the same work; after a warm-up block they alternate in
blocks (10 requests at one stream; at 32 streams one burst, or one closed-loop block), the
order flipped every block, so that the machine's noise hits them alike.
gateway - direct is what the gateway adds: HTTP parsing, routing, SSE encoding, and one more
process per token. `cluster up` has the gateway replica itself listen on the endpoint's port.

`--layout` pins the processes to cores. On a machine this small every extra process hop waits
for a core, and the gateway's CPU slows the engine it is measured against; `head-alone` (the
default) gives the head (`cluster up`, Ray, the gateway) a core of its own, as its own machine
would have, and puts the agent and this client on the others in both paths.

`--proxy` starts the cluster with RAY_SERVE_ENABLE_DIRECT_INGRESS=0, so that Serve's HTTP proxy
serves the endpoint, as before `cluster up` bypassed it; a third path, `no-proxy`, then sends the
same HTTP requests to the gateway replica's own port (found through /proc): the difference
between `gateway` and `no-proxy` is the proxy's hop.

At 32 streams the engine steps every 60-100 ms here, and a request's TTFT depends on where its
arrival falls between two steps: that noise is larger than the targets (see `--control`). So a
second table takes it out: each request's TTFT less the node's own (the node's receipt of the
request to its first token, which the node reports when it finishes: the direct path gets it in
its stream, the gateway path from the ledger's row for the request). What is left is the time
the request spent outside the node, in the client, the network and, on the gateway path, the
gateway; the difference between the paths is what the gateway adds, without the engine's steps.
A request the gateway delays reaches the node later, which this counts in full; what it leaves
out is only how the engine's next step happened to fall.

A third table splits the gateway path's time outside the node into the way in, the hop to the
node and back, and the way out, with the gateway's own times from its ledger row: see
bench/gateway_parts.py.

`--control` adds a path `direct/again` that is the direct path once more, in its own blocks: an
A/A comparison. Its added figures should be 0, and their intervals show how finely this machine
can tell two paths apart at all; a gateway figure cannot be shown within a target narrower than
its control's interval.

`--arrival` says how the 32 streams come (default: both, each its own table rows):
- `closed`: 32 clients, each sending its next request as soon as its last one ends, as a
  benchmark with a fixed concurrency does (vLLM's `--max-concurrency`, genai-perf's
  `--concurrency`). Their starts are spread over the first 320 ms and each request asks for
  between half and 1.5 times `--max-tokens` (the same draws for every path), so the clients
  do not stay in step; each client's first request of a block is a warm-up and not counted.
- `burst`: all 32 requests of a round sent at the same instant, the next round when all have
  ended. The gateway takes the burst in one request at a time, so this is the worst case for
  what it adds.

The direct path's client (grpc.aio) spends more CPU per request than the lean HTTP client does,
on the core it shares with the agent (the CPU table shows both), so at 32 streams it slows the
engine a little more in the direct path than the gateway path's client does: there the
gateway can come out ahead of direct.

ITL is each request's mean gap between tokens after the first. CPU per request is read from
/proc for the agent, for everything `cluster up` started (Ray, the gateway) and for this client.
Targets: added p50 TTFT <= 2 ms and added p99 TTFT <= 5 ms. Each added figure comes with a 95%
interval from a paired block bootstrap (see added_interval): PASS when all of it is within the
target, MISS when none of it is, open when it straddles the target. `--save` writes every
timing, by block, for a closer look.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import os
import sqlite3
import time
from collections.abc import Awaitable
from dataclasses import dataclass, field, replace
from pathlib import Path

import gateway_parts
import httpx
from arrivals import Send, burst, closed_loop, interval_verdict, one_by_one, paired_interval
from common import (
    CLIENTS,
    LAYOUTS,
    HttpClient,
    Timing,
    command_line,
    cpu_seconds,
    demo_models,
    descendants_of,
    http_client,
    layout_cores,
    machine_jiffies,
    machine_line,
    make_agents,
    ms,
    percentile,
    pin,
    start_all,
    start_cluster,
    stream_grpc,
    stream_http,
    table,
    workspace,
)

from cluster.node_client import NodeClient

PROMPTS = (
    "Say hello to the office.",
    "What is on the desk this morning?",
    "Name three things a small team needs.",
    "Write one sentence about quiet machines.",
)
ADDED_P50_MS, ADDED_P99_MS = 2.0, 5.0
BLOCK = 10  # requests per block at one stream
WIDE = 32  # the concurrent streams of the second measurement
ARRIVALS = ("closed", "burst")


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


class Meter:
    """Runs blocks of requests and reads the CPU clocks around each."""

    def __init__(self, agent_pid: int, cluster_pid: int) -> None:
        self.agent_pid, self.cluster_pid = agent_pid, cluster_pid

    def _read(self) -> tuple[float, ...]:
        busy, total = machine_jiffies()
        return (cpu_seconds([self.agent_pid]), cpu_seconds([self.cluster_pid]),
                cpu_seconds([os.getpid()], descendants=False), busy, total, time.perf_counter())

    async def block(self, into: Series, work: Awaitable[list[Timing]]) -> None:
        """Run one block of requests and add its timings and CPU to `into`."""
        # What this client made so far (every timing) is out of the collector's reach: a full
        # collection in a block walks that block's objects only (13.7 ms over the whole heap
        # late in a run, on one path's block; node_agent/heap.py does the same for the agent).
        gc.freeze()
        before = self._read()
        timings = await work
        d = [b - a for a, b in zip(before, self._read(), strict=True)]
        into.timings.extend(timings)
        into.blocks.append(timings)
        if timings:
            into.flight_s += sum(t.last - t.started for t in timings)
            into.span_s += max(t.last for t in timings) - min(t.started for t in timings)
        into.agent_s += d[0]
        into.cluster_s += d[1]
        into.client_s += d[2]
        into.machine_busy += int(d[3])
        into.machine_total += int(d[4])
        into.wall_s += d[5]


async def measure(meter: Meter, paths: dict[str, Send], streams: int, blocks: int,
                  per_block: int, max_tokens: int, arrival: str = "burst") -> dict[str, Series]:
    """Alternate the paths block by block, order flipped each time; block 0 warms up."""
    results = {name: Series() for name in paths}
    names = list(paths)
    for b in range(blocks + 1):
        for name in names if b % 2 else names[::-1]:
            prompts = [PROMPTS[(b * per_block + i) % len(PROMPTS)] for i in range(per_block)]
            into = results[name] if b else Series()
            if streams == 1:
                work = one_by_one(paths[name], prompts, max_tokens)
            elif arrival == "closed":
                work = closed_loop(paths[name], prompts, max_tokens, seed=b)
            else:
                work = burst(paths[name], prompts, max_tokens)
            await meter.block(into, work)
    return results


def _p(series: Series, q: float, what: str = "ttft") -> float:
    return percentile([getattr(t, what) for t in series.timings], q)


def in_flight(s: Series) -> float:
    """Mean counted requests in flight while they ran (Little's law: their summed durations
    over the spans from each block's first start to its last end). Warm-up requests still
    running at a block's start are not counted, so this is slightly low."""
    return s.flight_s / s.span_s if s.span_s else 0.0


def latency_rows(label: str, results: dict[str, Series]) -> list[list[object]]:
    """Per path: requests, TTFT p50/p99, ITL p50/p99, tokens per request, mean in flight."""
    return [[f"{name} {label}", len(s.timings), ms(_p(s, 50)), ms(_p(s, 99)),
             ms(_p(s, 50, "itl")), ms(_p(s, 99, "itl")),
             f"{sum(t.tokens for t in s.timings) / max(len(s.timings), 1):.1f}",
             f"{in_flight(s):.1f}"]
            for name, s in results.items()]


def added_rows(label: str, results: dict[str, Series]) -> list[list[object]]:
    """Per HTTP path: its TTFT and ITL minus direct's, with 95% intervals and verdicts, and
    the ratios."""
    a = results["direct"]
    rows: list[list[object]] = []
    for name, b in results.items():
        if name == "direct":
            continue
        rows.append([f"{name} {label}", *_added(a, b, "ttft"),
                     f"{_p(b, 50) / _p(a, 50):.2f}", f"{_p(b, 99) / _p(a, 99):.2f}",
                     ms(_p(b, 50, "itl") - _p(a, 50, "itl")),
                     f"{_p(b, 50, 'itl') / _p(a, 50, 'itl'):.2f}"])
    return rows


def outside_rows(label: str, results: dict[str, Series]) -> list[list[object]]:
    """Per path: TTFT less the node's own (receipt to first token) at p50 and p99, and what
    each path adds to it over direct, with 95% intervals and verdicts."""
    a = results["direct"]
    rows: list[list[object]] = []
    for name, b in results.items():
        known = sum(t.node_ttft is not None for t in b.timings)
        row: list[object] = [f"{name} {label}", known, ms(_p(b, 50, "outside")),
                             ms(_p(b, 99, "outside"))]
        rows.append(row + ([""] * 6 if name == "direct" else _added(a, b, "outside")))
    return rows


def _added(a: Series, b: Series, what: str) -> list[object]:
    """b's p50 and p99 of a Timing figure minus a's, each with its 95% interval and verdict."""
    cells: list[object] = []
    for q, target in ((50, ADDED_P50_MS), (99, ADDED_P99_MS)):
        low, high = paired_interval(a.blocks, b.blocks, q, what=what)
        cells += [ms(_p(b, q, what) - _p(a, q, what)), f"{ms(low)} to {ms(high)}",
                  interval_verdict(low, high, target)]
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
        rows.append([f"{name} {label}", ms(s.agent_s / n), ms(s.cluster_s / n),
                     ms(s.client_s / n), f"{ours:.0%}", f"{machine:.0%}"])
    return rows


def split_rows(label: str, results: dict[str, Series]) -> list[list[object]]:
    """Where the gateway's extra TTFT and CPU go: the hop into the replica, and the replica."""
    if "no-proxy" not in results:
        return []
    d, g, r = (results[n] for n in ("direct", "gateway", "no-proxy"))

    def cpu(s: Series) -> float:
        return s.cluster_s / max(len(s.timings), 1)

    return [[label, "ingress hop (gateway - no-proxy)", ms(_p(g, 50) - _p(r, 50)),
             ms(cpu(g) - cpu(r))],
            [label, "replica: HTTP, route, gRPC, SSE (no-proxy - direct)",
             ms(_p(r, 50) - _p(d, 50)), ms(cpu(r) - cpu(d))]]


def contention_note(label: str, results: dict[str, Series]) -> str | None:
    """A warning when the cores were saturated while the gateway path ran."""
    ours, machine = _busy(results["gateway"])
    if machine < 0.8:
        return None
    return (f"note: at {label} the cores were {machine:.0%} busy during the gateway "
            f"path ({ours:.0%} from the engine, Ray and this client, the rest from other work "
            "on this machine): every extra process hop waits for a core, so these figures "
            "measure CPU contention as much as the gateway's own latency.")


async def run(args: argparse.Namespace) -> dict[str, dict[str, Series]]:
    """Start an agent and a cluster, measure every path at 1 and 32 streams."""
    cores = layout_cores(args.layout)
    print(f"layout {args.layout}: {LAYOUTS[args.layout]} (head {sorted(cores['head'])}, node "
          f"{sorted(cores['node'])}, client {sorted(cores['client'])})", flush=True)
    me = os.getpid()
    with workspace("meterless-bench-gateway-") as (root, stack):
        pin(me, cores["node"], below=False)  # what a process starts inherits its mask
        [agent] = start_all(stack, make_agents(root, demo_models(root), {"node": 0}))
        t0 = time.perf_counter()
        pin(me, cores["head"], below=False)
        cluster = start_cluster(root, [agent], "fastest")
        stack.callback(cluster.stop)
        pin(me, cores["client"], below=False)
        assert agent.proc is not None and cluster.proc is not None
        print(f"cluster up, node ready: {time.perf_counter() - t0:.1f}s", flush=True)
        client = NodeClient(agent.address)
        lean, slow = http_client(2 * WIDE), http_client(2 * WIDE, "httpx")
        http = slow if args.client == "httpx" else lean
        try:
            paths: dict[str, Send] = {
                "direct": lambda p, n: stream_grpc(client, [("user", p)], n)}
            if args.control:
                paths["direct/again"] = paths["direct"]
            if args.client != "httpx":
                paths["gateway"] = lambda p, n: _http(lean, cluster.url, p, n)
            if args.client != "lean":
                paths["gateway/httpx"] = lambda p, n: _http(slow, cluster.url, p, n)
            url = None if args.no_replica_path else replica_url(cluster.proc.pid)
            if url and url.rsplit(":", 1)[1] != str(cluster.port):  # the proxy is in front
                paths["no-proxy"] = lambda p, n: _http(http, url, p, n)
            meter = Meter(agent.proc.pid, cluster.proc.pid)
            results = {}
            runs = [("x1", 1, args.requests // BLOCK, BLOCK, "")]
            runs += [(f"x{WIDE} {a}", WIDE, args.rounds, WIDE, a) for a in ARRIVALS
                     if args.arrival in (a, "both")]
            for label, streams, blocks, per_block, arrival in runs:
                t0 = time.perf_counter()
                results[label] = await measure(meter, paths, streams, blocks, per_block,
                                               args.max_tokens, arrival)
                print(f"{label} measured: {time.perf_counter() - t0:.1f}s", flush=True)
            missing = add_ledger_times(results, cluster.data_dir / "ledger.sqlite3")
            if missing:
                print(f"{missing} gateway requests had no row in the ledger", flush=True)
            return results
        finally:
            await lean.aclose()
            await slow.aclose()
            await client.close()


def add_ledger_times(results: dict[str, dict[str, Series]], path: Path,
                     wait_s: float = 10.0) -> int:
    """Give each request through the gateway the node's own TTFT (the direct path's came with
    its stream) and the gateway's start and TTFT, from the ledger's row for it; returns how many
    found no row. Rows reach the ledger in batches up to a second after their request ends."""
    series = [s for r in results.values() for s in r.values()]
    ids = {t.request_id for s in series for t in s.timings if t.request_id}
    if not path.exists():
        return len(ids)
    deadline = time.monotonic() + wait_s
    while True:
        with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as conn:
            found = {row[0]: row[1:] for row in conn.execute(
                "SELECT request_id, node_ttft_s, at, ttft_s FROM requests")}
        if ids <= found.keys() or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    wall_to_perf = time.perf_counter() - time.time()  # the gateway's wall clock, as ours
    for s in series:
        s.blocks = [[_with_row(t, found.get(t.request_id), wall_to_perf) if t.request_id else t
                     for t in block] for block in s.blocks]
        s.timings = [t for block in s.blocks for t in block]
    return len(ids - found.keys())


def _with_row(t: Timing, row: tuple[float | None, float, float | None] | None,
              wall_to_perf: float) -> Timing:
    if row is None:
        return t
    node_ttft, at, ttft = row
    return replace(t, node_ttft=node_ttft, gateway_start=at + wall_to_perf, gateway_ttft=ttft)


async def _http(http: HttpClient, url: str, prompt: str, max_tokens: int) -> Timing:
    timing, _ = await stream_http(http, url, [("user", prompt)], max_tokens)
    return timing


def replica_url(cluster_pid: int) -> str | None:
    """The gateway replica's own HTTP port (Serve's direct ingress), found through /proc."""
    pid = next((p for p in descendants_of(cluster_pid)
                if command_line(p).startswith("ray::ServeReplica:meterless:gateway")), None)
    if pid is None:
        return None
    inodes = set()
    with contextlib.suppress(OSError):
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            with contextlib.suppress(OSError):
                if (target := os.readlink(fd)).startswith("socket:["):
                    inodes.add(target[8:-1])
    for port in _listening_ports(inodes):
        url = f"http://127.0.0.1:{port}"
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return url
    return None


def _listening_ports(inodes: set[str]) -> list[int]:
    """Loopback TCP ports in LISTEN state held by one of these socket inodes."""
    ports = []
    with contextlib.suppress(OSError):
        for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
            f = line.split()
            if f[3] == "0A" and f[9] in inodes:  # 0A: LISTEN
                ports.append(int(f[1].split(":")[1], 16))
    return ports


def report(results: dict[str, dict[str, Series]], args: argparse.Namespace) -> None:
    """Print the latency, overhead and CPU tables and the verdicts."""
    ingress = "Serve's HTTP proxy" if args.proxy else "the gateway replica itself"
    print(f"\nstreamed chat completions, max_tokens={args.max_tokens}, temperature 0; "
          f"direct = NodeClient over gRPC; gateway = HTTP/SSE to the endpoint ({ingress})"
          + ("; no-proxy = HTTP/SSE to the gateway replica's own port" if args.proxy else ""))
    rows = [row for s, r in results.items() for row in latency_rows(s, r)]
    print(table(["path", "requests", "TTFT p50 ms", "TTFT p99 ms", "ITL p50 ms", "ITL p99 ms",
                 "tokens/req", "in flight"], rows))
    print(f"\nadded over direct (path - direct); targets for `gateway`: p50 <= {ADDED_P50_MS:g} "
          f"ms, p99 <= {ADDED_P99_MS:g} ms; PASS when the 95% interval is within the target, "
          "MISS when it is all over, open when it straddles it")
    print(table(["path", "+TTFT p50 ms", "95% interval", "", "+TTFT p99 ms", "95% interval",
                 "", "p50 ratio", "p99 ratio", "+ITL p50 ms", "ITL ratio"],
                [row for s, r in results.items() for row in added_rows(s, r)]))
    print("\noutside the node: each request's TTFT less the node's own (its receipt of the "
          "request to its first token, as it reported it; through the gateway, from the ledger), "
          "so without the wait for the engine's next step; the same targets")
    print(table(["path", "known", "p50 ms", "p99 ms", "+p50 ms", "95% interval", "", "+p99 ms",
                 "95% interval", ""],
                [row for s, r in results.items() for row in outside_rows(s, r)]))
    print(f"\n{gateway_parts.TITLE}")
    print(table(gateway_parts.HEADERS, [row for s, r in results.items() for row in
                                        gateway_parts.parts_rows(s, {n: x.timings
                                                                     for n, x in r.items()})]))
    if split := [row for s, r in results.items() for row in split_rows(s, r)]:
        print("\nwhere the added time goes (TTFT p50 difference; CPU ms per request in `cluster "
              "up`'s processes, difference)")
        print(table(["streams", "part", "+TTFT p50 ms", "+CPU ms/request"], split))
    print("\nCPU ms per request over each path's blocks; busy = share of all cores "
          "(ours: agent + cluster up + client; machine: every process)")
    print(table(["path", "agent", "cluster up (Ray+gateway)", "client", "busy ours",
                 "busy machine"], [row for s, r in results.items() for row in cpu_rows(s, r)]))
    for label, r in results.items():
        if note := contention_note(label, r):
            print(note)


def parse_args() -> argparse.Namespace:
    """The benchmark's flags."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a short smoke run")
    parser.add_argument("--max-tokens", type=int, default=16)
    parser.add_argument("--requests", type=int, default=200, help="per path at one stream")
    parser.add_argument("--rounds", type=int, default=10, help=f"rounds of {WIDE} per path")
    parser.add_argument("--arrival", choices=(*ARRIVALS, "both"), default="both",
                        help="how the 32 streams come: a closed loop of 32 clients, bursts of "
                             "32 at once, or both (default)")
    parser.add_argument("--save", type=Path, metavar="FILE",
                        help="also write every counted request's timings there, as JSON")
    parser.add_argument("--client", choices=(*CLIENTS, "both"), default="both",
                        help="the HTTP client of the gateway paths (default: a path for each)")
    parser.add_argument("--proxy", action="store_true",
                        help="serve the endpoint through Serve's HTTP proxy, as before")
    parser.add_argument("--no-replica-path", action="store_true",
                        help="skip the path to the replica's own port")
    parser.add_argument("--control", action="store_true",
                        help="also run the direct path a second time, as its own path: its "
                             "added figures are what this machine's noise alone gives")
    parser.add_argument("--layout", choices=LAYOUTS, default="head-alone",
                        help="which processes share which cores: " + "; ".join(
                            f"{k}: {v}" for k, v in LAYOUTS.items()) + " (default head-alone)")
    args = parser.parse_args()
    if args.quick:
        args.requests, args.rounds = min(args.requests, 20), min(args.rounds, 2)
    return args


def main() -> None:
    """Run, print, exit 0 (a benchmark reports; it does not fail)."""
    args = parse_args()
    if args.proxy:
        os.environ["RAY_SERVE_ENABLE_DIRECT_INGRESS"] = "0"  # inherited by `cluster up`
    print(machine_line(), flush=True)
    started_at = time.perf_counter()
    try:
        results = asyncio.run(run(args))
    except KeyboardInterrupt:
        print("interrupted; everything this benchmark started has been stopped")
        return
    report(results, args)
    if args.save:
        args.save.write_text(json.dumps(
            {label: {name: [[[t.started, t.first, t.last, t.tokens, t.node_ttft,
                              t.gateway_start, t.gateway_ttft] for t in block]
                            for block in series.blocks]
                     for name, series in r.items()} for label, r in results.items()}))
        print(f"timings written to {args.save} ({{streams and arrival: {{path: [block: "
              "[[started, first token, last token, tokens, node's TTFT, gateway's start, gateway's "
              "TTFT], ...], ...]}}, "
              "perf_counter seconds)")
    print(f"{machine_line()}; total {time.perf_counter() - started_at:.0f}s")


if __name__ == "__main__":
    main()
