"""What the gateway adds to a streamed chat completion: TTFT and ITL, direct and through it.

    .venv/bin/python -m bench.gateway [--quick] [--max-tokens 16] [--requests 200] [--rounds 10]
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

bench/gateway_tables.py says what each printed table shows, and how the targets are judged.
`--save` writes every timing, by block, for a closer look.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import os
import sqlite3
import time
from collections.abc import Awaitable
from dataclasses import replace
from pathlib import Path

import httpx

from bench import gateway_tables
from bench.arrivals import Send, burst, closed_loop, one_by_one
from bench.common import (
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
    pin,
    start_all,
    start_cluster,
    stream_grpc,
    stream_http,
    workspace,
)
from bench.gateway_tables import Series
from cluster.node_client import NodeClient

PROMPTS = (
    "Say hello to the office.",
    "What is on the desk this morning?",
    "Name three things a small team needs.",
    "Write one sentence about quiet machines.",
)
BLOCK = 10  # requests per block at one stream
WIDE = 32  # the concurrent streams of the second measurement
ARRIVALS = ("closed", "burst")


class Meter:
    """Runs blocks of requests and reads the CPU clocks around each."""

    def __init__(self, agent_pid: int, cluster_pid: int) -> None:
        self.agent_pid, self.cluster_pid = agent_pid, cluster_pid

    def _read(self) -> tuple[float, ...]:
        busy, total = machine_jiffies()
        return (
            cpu_seconds([self.agent_pid]),
            cpu_seconds([self.cluster_pid]),
            cpu_seconds([os.getpid()], descendants=False),
            busy,
            total,
            time.perf_counter(),
        )

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


async def measure(
    meter: Meter,
    paths: dict[str, Send],
    streams: int,
    blocks: int,
    per_block: int,
    max_tokens: int,
    arrival: str = "burst",
) -> dict[str, Series]:
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


async def run(args: argparse.Namespace) -> dict[str, dict[str, Series]]:
    """Start an agent and a cluster, measure every path at 1 and 32 streams."""
    cores = layout_cores(args.layout)
    print(
        f"layout {args.layout}: {LAYOUTS[args.layout]} (head {sorted(cores['head'])}, node "
        f"{sorted(cores['node'])}, client {sorted(cores['client'])})",
        flush=True,
    )
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
            paths: dict[str, Send] = {"direct": lambda p, n: stream_grpc(client, [("user", p)], n)}
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
            runs += [
                (f"x{WIDE} {a}", WIDE, args.rounds, WIDE, a)
                for a in ARRIVALS
                if args.arrival in (a, "both")
            ]
            for label, streams, blocks, per_block, arrival in runs:
                t0 = time.perf_counter()
                results[label] = await measure(
                    meter, paths, streams, blocks, per_block, args.max_tokens, arrival
                )
                print(f"{label} measured: {time.perf_counter() - t0:.1f}s", flush=True)
            missing = add_ledger_times(results, cluster.data_dir / "ledger.sqlite3")
            if missing:
                print(f"{missing} gateway requests had no row in the ledger", flush=True)
            return results
        finally:
            await lean.aclose()
            await slow.aclose()
            await client.close()


def add_ledger_times(
    results: dict[str, dict[str, Series]], path: Path, wait_s: float = 10.0
) -> int:
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
            found = {
                row[0]: row[1:]
                for row in conn.execute("SELECT request_id, node_ttft_s, at, ttft_s FROM requests")
            }
        if ids <= found.keys() or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    wall_to_perf = time.perf_counter() - time.time()  # the gateway's wall clock, as ours
    for s in series:
        s.blocks = [
            [
                _with_row(t, found.get(t.request_id), wall_to_perf) if t.request_id else t
                for t in block
            ]
            for block in s.blocks
        ]
        s.timings = [t for block in s.blocks for t in block]
    return len(ids - found.keys())


def _with_row(
    t: Timing, row: tuple[float | None, float, float | None] | None, wall_to_perf: float
) -> Timing:
    if row is None:
        return t
    node_ttft, at, ttft = row
    return replace(t, node_ttft=node_ttft, gateway_start=at + wall_to_perf, gateway_ttft=ttft)


async def _http(http: HttpClient, url: str, prompt: str, max_tokens: int) -> Timing:
    timing, _ = await stream_http(http, url, [("user", prompt)], max_tokens)
    return timing


def replica_url(cluster_pid: int) -> str | None:
    """The gateway replica's own HTTP port (Serve's direct ingress), found through /proc."""
    pid = next(
        (
            p
            for p in descendants_of(cluster_pid)
            if command_line(p).startswith("ray::ServeReplica:meterless:gateway")
        ),
        None,
    )
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


def parse_args() -> argparse.Namespace:
    """The benchmark's flags."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a short smoke run")
    parser.add_argument("--max-tokens", type=int, default=16)
    parser.add_argument("--requests", type=int, default=200, help="per path at one stream")
    parser.add_argument("--rounds", type=int, default=10, help=f"rounds of {WIDE} per path")
    parser.add_argument(
        "--arrival",
        choices=(*ARRIVALS, "both"),
        default="both",
        help="how the 32 streams come: a closed loop of 32 clients, bursts of "
        "32 at once, or both (default)",
    )
    parser.add_argument(
        "--save",
        type=Path,
        metavar="FILE",
        help="also write every counted request's timings there, as JSON",
    )
    parser.add_argument(
        "--client",
        choices=(*CLIENTS, "both"),
        default="both",
        help="the HTTP client of the gateway paths (default: a path for each)",
    )
    parser.add_argument(
        "--proxy",
        action="store_true",
        help="serve the endpoint through Serve's HTTP proxy, as before",
    )
    parser.add_argument(
        "--no-replica-path", action="store_true", help="skip the path to the replica's own port"
    )
    parser.add_argument(
        "--control",
        action="store_true",
        help="also run the direct path a second time, as its own path: its "
        "added figures are what this machine's noise alone gives",
    )
    parser.add_argument(
        "--layout",
        choices=LAYOUTS,
        default="head-alone",
        help="which processes share which cores: "
        + "; ".join(f"{k}: {v}" for k, v in LAYOUTS.items())
        + " (default head-alone)",
    )
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
    gateway_tables.report(results, args)
    if args.save:
        gateway_tables.save(results, args.save)
    print(f"{machine_line()}; total {time.perf_counter() - started_at:.0f}s")


if __name__ == "__main__":
    main()
