"""What bench/ledger.py drives: a stub agent, clusters in front of it, and a steady load on them.

The load is `concurrency` clients sending the same completion back to back. It is measured in
windows: the requests answered in a window, its length, and the CPU time each Serve process of
the cluster (HTTP proxy, gateway, controller with its ledger thread) spent meanwhile, read from
/proc, so that the figure stays meaningful on a machine that other work keeps busy.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from common import command_line, descendants_of, http_client, pin, proc_stats

from tests.harness import ClusterProcess, free_port, wait_for

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
        [sys.executable, str(ROOT / "bench" / "stub_agent.py"), "--port", str(port)],
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
