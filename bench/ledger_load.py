"""What bench.ledger drives: a stub agent, clusters in front of it, and a steady load on them.

The load is `concurrency` clients sending the same completion back to back. It is measured in
windows: the requests answered in a window, its length, and the CPU time each Serve process of
the cluster (HTTP proxy, gateway, controller with its ledger thread) spent meanwhile, read from
/proc, so that the figure stays meaningful on a machine that other work keeps busy.

Beside it, the ledger's own work per request timed in-process (`parts`), each part the median of
five runs: the gateway's (one request's tally filled in as Forwarder.stream fills it and its row
into the recorder's buffer, less the same events iterated bare; then the rows sent in batches),
the transport's (a batch of rows pickled and unpickled, as the Serve handle call to the controller
does) and the controller's (rows inserted 1,000 to a transaction into a ledger that already holds
100,000, their ids made as a gateway makes them, and counted in the request metrics).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import pickle
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from bench.common import command_line, descendants_of, http_client, pin, proc_stats
from cluster.cli.ports import free_port
from cluster.gateway.forward import ForwardEvent, Routed
from cluster.gateway.tally import GatewayMeter, RequestInfo
from cluster.ledger import store
from cluster.ledger.metrics import RequestCounts
from cluster.ledger.rows import Outcome, UsageAck, UsageBatch, UsageRow, new_request_id
from cluster.types import NodeId
from node_agent.types import Delta, Finished, Usage
from tests.harness import ClusterProcess, wait_for

ROOT = Path(__file__).resolve().parents[1]

ROLES = {  # command-line prefix of a Serve process -> its role in the tables
    "ray::ServeReplica:meterless:gateway": "gateway",
    "ray::ServeReplica:meterless:controller": "controller",
    "ray::ProxyActor": "proxy",
}


def body(tokens: int, stream: bool) -> dict[str, object]:
    """The completion every client sends: `tokens` tokens (the stub answers that many)."""
    return {
        "model": "demo",
        "messages": [{"role": "user", "content": "Hi"}],
        "max_tokens": tokens,
        "stream": stream,
    }


@dataclass(frozen=True)
class Round:
    """One window of load on one cluster."""

    requests: int
    seconds: float
    cpu_s: float  # CPU seconds its Serve processes used meanwhile
    parts: dict[str, float] = field(default_factory=dict)  # the same by process (see ROLES)

    @property
    def rps(self) -> float:
        """Requests per second."""
        return self.requests / self.seconds

    @property
    def cpu_ms(self) -> float:
        """Serve CPU milliseconds per request."""
        return 1000 * self.cpu_s / self.requests

    def us_per_request(self, role: str) -> float:
        """CPU microseconds per request of one role's processes (see ROLES)."""
        return 1e6 * self.parts.get(role, 0.0) / self.requests


def serve_cpu(root_pid: int) -> dict[str, float]:
    """CPU seconds of the Serve proxy and replicas under `root_pid` (a `cluster up`), by role."""
    stats = proc_stats()
    by_role = dict.fromkeys(ROLES.values(), 0.0)
    for pid in descendants_of(root_pid, stats):
        cmd = command_line(pid)
        role = next((r for prefix, r in ROLES.items() if cmd.startswith(prefix)), None)
        if role is not None:
            by_role[role] += stats[pid][1]
    return by_role


@dataclass(frozen=True)
class Mark:
    """Where a steady load stood at one instant."""

    answered: int
    at: float
    cpu: dict[str, float]

    def to(self, later: Mark) -> Round:
        """The window from this mark to a later one."""
        parts = {role: later.cpu[role] - self.cpu[role] for role in ROLES.values()}
        return Round(later.answered - self.answered, later.at - self.at, sum(parts.values()), parts)


@contextlib.asynccontextmanager
async def steady_load(
    cluster: ClusterProcess, concurrency: int, client: str, request: dict[str, object]
) -> AsyncIterator[Callable[[], Mark]]:
    """`concurrency` clients sending `request` back to back while the block runs; yields what
    marks where they stand."""
    assert cluster.proc is not None
    pid = cluster.proc.pid
    answered, running = 0, True
    async with http_client(concurrency, client, base_url=cluster.url) as http:

        async def one() -> None:
            nonlocal answered
            while running:
                r = await http.post("/v1/chat/completions", json=request)
                if r.status_code != 200:
                    raise RuntimeError(f"{r.status_code}: {r.text[:200]}")
                answered += 1

        tasks = [asyncio.create_task(one()) for _ in range(concurrency)]
        try:
            yield lambda: Mark(answered, time.perf_counter(), serve_cpu(pid))
        finally:
            running = False
            await asyncio.gather(*tasks)


async def burst(
    cluster: ClusterProcess,
    seconds: float,
    concurrency: int,
    client: str = "lean",
    request: dict[str, object] | None = None,
) -> tuple[Round, int]:
    """A window of `seconds` of steady load (default request: one token, not streamed), and
    every request answered, those in flight as the window opened and closed included."""
    async with steady_load(cluster, concurrency, client, request or body(1, False)) as mark:
        start = mark()
        await asyncio.sleep(seconds)
        window = start.to(mark())
    return window, mark().answered


@contextlib.contextmanager
def stub_agent() -> Iterator[str]:
    """The stub agent as a subprocess; yields its address."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "bench.stub_agent", "--port", str(port)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        assert proc.stdout is not None
        proc.stdout.readline()  # "stub agent listening on ..."
        yield f"127.0.0.1:{port}"
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()


def start_cluster(root: Path, name: str, agent: str, *extra: str) -> ClusterProcess:
    """`cluster up` in front of the stub agent; returns once its node is ready."""
    (root / name).mkdir()
    cluster = ClusterProcess(
        root / name, args=("--no-local-agent", "--no-mdns", "--peer", agent, *extra)
    )
    cluster.start()
    wait_for(lambda: any(n["state"] == "ready" for n in cluster.nodes()), 60, f"{name} ready")
    return cluster


def pin_gateways(clusters: list[ClusterProcess], *, controller_nice: int = 0) -> str:
    """Each gateway replica alone on the first core, everything else (this client, the stub
    agent, Ray, the controllers) on the others, the controllers' threads at `controller_nice`;
    what the run will say of it."""
    every = sorted(os.sched_getaffinity(0))
    if len(every) < 2:
        return "cores: one, shared by every process"
    first, rest = {every[0]}, set(every[1:])
    pin(os.getpid(), rest)  # this process, the stub agent, both clusters, and what they start
    for cluster in clusters:
        assert cluster.proc is not None
        for pid in descendants_of(cluster.proc.pid):
            cmd = command_line(pid)
            if cmd.startswith("ray::ServeReplica:meterless:gateway"):
                pin(pid, first)
            elif cmd.startswith("ray::ServeReplica:meterless:controller") and controller_nice:
                for tid in os.listdir(f"/proc/{pid}/task"):  # nice is a thread's on Linux
                    os.setpriority(os.PRIO_PROCESS, int(tid), controller_nice)
    priority = f", the controllers at nice {controller_nice}" if controller_nice else ""
    return (
        f"cores: each gateway replica on core {every[0]} (one at a time is busy); this "
        f"client, the stub agent, Ray and the controllers on {sorted(rest)}{priority}"
    )


def ledger_requests(cluster: ClusterProcess) -> int:
    """Requests the cluster's ledger holds."""
    groups = httpx.get(
        f"{cluster.url}/admin/usage",
        params={"since": "all"},
        headers=cluster.admin_headers,
        timeout=30,
    ).json()
    return sum(g["requests"] for g in groups["groups"])


USAGE = Usage(
    prompt_tokens=12,
    completion_tokens=8,
    cached_prompt_tokens=4,
    ttft_seconds=0.01,
    decode_tokens_per_second=50.0,
    duration_seconds=0.2,
)
ROUTED = Routed(NodeId("node-1"), 1)
FINISHED = Finished("stop", USAGE)
EVENTS: tuple[ForwardEvent, ...] = (
    ROUTED,
    Delta("Hello", 1, 12, 4),
    *(Delta(" w", 1) for _ in range(7)),
    FINISHED,
)
HELD = 100_000  # rows in the ledger before the controller's part is timed


async def _events() -> AsyncIterator[ForwardEvent]:
    for event in EVENTS:
        yield event


async def _ack(batch: UsageBatch) -> UsageAck:
    return UsageAck(written=len(batch.rows))


async def _requests(n: int, meter: GatewayMeter | None) -> float:
    """Seconds for `n` requests' events, tallied by `meter`'s taps as Forwarder.stream fills
    them in (or bare)."""
    start = time.perf_counter()
    for i in range(n):
        tap = None
        if meter is not None:
            info = RequestInfo(request_id=f"r{i}", model="demo", endpoint="chat", stream=True)
            tap = meter.tap(info)
        async for _ in _events():
            pass
        if tap is not None:  # what the forwarder writes, where it looks at the events anyway
            tap.node_id, tap.attempts = ROUTED.node_id, ROUTED.attempts
            tap.first_at = time.monotonic()
            tap.final = FINISHED
            tap.prompt, tap.cached, tap.generated = 12, 4, 8
            tap.end(None)
    return time.perf_counter() - start


def gateway_us(n: int) -> float:
    """Microseconds the tap and the buffer add to one request."""
    meter = GatewayMeter(_ack)
    recorder = meter.recorder
    assert recorder is not None
    recorder.max_buffered = n  # keep every row for the batches below

    async def both() -> float:
        bare, tapped = await _requests(n, None), await _requests(n, meter)
        start = time.perf_counter()  # what a replica does with the rows in batches
        while recorder.buffered:
            await recorder.flush_once()
        return (tapped + time.perf_counter() - start - bare) / n * 1e6

    return asyncio.run(both())


def usage_rows(n: int) -> list[UsageRow]:
    """`n` typical rows, their ids made as a gateway makes them."""
    return [
        UsageRow(
            request_id=new_request_id(),
            at=1.8e9 + i,
            key_id=None,
            model="demo",
            node_id="node-1",
            endpoint="chat",
            stream=True,
            prompt_tokens=12,
            cached_prompt_tokens=4,
            completion_tokens=8,
            ttft_s=0.01,
            duration_s=0.2,
            outcome=Outcome.OK,
            attempts=1,
        )
        for i in range(n)
    ]


def transport_us(n: int) -> float:
    """Microseconds to pickle and unpickle one row inside a batch of 1,000, as rows travel."""
    values = tuple(r.values() for r in usage_rows(1_000))
    batch = UsageBatch(replica="g", rows=values, inflight=0, pending=0, closing=False)
    start = time.perf_counter()
    for _ in range(n // 1_000):
        pickle.loads(pickle.dumps(batch))
    return (time.perf_counter() - start) / (n // 1_000 * 1_000) * 1e6


def controller_us(n: int) -> float:
    """Microseconds to insert one row, 1,000 to a transaction, into a ledger file that already
    holds HELD rows (an index's cost grows with it), and to count it in the request metrics."""
    held = [r.values() for r in usage_rows(HELD)]
    data = [r.values() for r in usage_rows(n)]  # as a batch brings them
    with tempfile.TemporaryDirectory() as tmp:
        conn = store.connect(Path(tmp) / store.FILE_NAME)
        for i in range(0, HELD, 1_000):
            store.insert_requests(conn, held[i : i + 1_000])
        counts = RequestCounts()
        start = time.perf_counter()
        for i in range(0, n, 1_000):
            store.insert_requests(conn, data[i : i + 1_000])
            counts.observe(data[i : i + 1_000])
        elapsed = time.perf_counter() - start
        conn.close()
    return elapsed / n * 1e6


def parts(n: int = 20_000) -> dict[str, float]:
    """Each part of the ledger's own work, in microseconds per request (medians of five runs)."""
    measures = {"gateway": gateway_us, "transport": transport_us, "controller": controller_us}
    return {name: statistics.median(us(n) for _ in range(5)) for name, us in measures.items()}
