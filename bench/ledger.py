"""What the ledger costs the gateway: requests/s and CPU per request, ledger on and off.

    .venv/bin/python bench/ledger.py [--rounds 30] [--seconds 3] [--concurrency 16]
                                     [--client lean|httpx] [--layout gateway-alone|shared]
                                     [--first on|off] [--random-layout]
                                     [--tokens 1] [--stream]

One stub agent (bench/stub_agent.py: the real gRPC service over an engine that answers at once,
so that the gateway, not the node, is the bottleneck) behind two `cluster up`s started side by
side: one as shipped, one with `--no-ledger`. Rounds alternate between them (ABBA, so drift and
whatever else runs on the machine hit both alike); in each, `--concurrency` clients send short
non-streaming chat completions back to back for `--seconds`, with bench/lean_http.py as the
client (`--client httpx` for httpx, whose own CPU takes more from the two cores it shares with
the gateway and makes the rounds swing more). By default each completion is one token, not
streamed: the gateway's work per request is least, so the ledger's share of it is greatest.
`--tokens N --stream` asks for streams of N tokens instead, as chat clients do.

Two figures, both on against off: requests/s (the median of the rounds' ratios, with a 95%
bootstrap interval: the rounds swing by several percent, more than the effect), and the CPU
time that the cluster's Serve processes (HTTP proxy, gateway, controller with its ledger thread)
spend per request, summed over all rounds. The gateway is CPU-bound, so its throughput goes as
the inverse of its CPU per request; the CPU figure is read from /proc per process, so it stays
meaningful on a machine that other work keeps busy, where requests/s swing from round to round.
The CPU is also shown per process (gateway replica, controller replica, proxy), which says
where the difference lands. Last, the ledger's own work per request timed in-process
(bench/ledger_parts.py), as a share of that CPU per request. Target: the ledger costs under 2%;
PASS when the interval's upper end is under 2%, MISS when its lower end is over, and "not
resolved" in between. It also checks that the ledger holds one row per request sent, and the
--no-ledger cluster none.

Both clusters are started alike (a fixed hash seed, no address-space randomization; see
start_alike), and by default each gateway replica gets a core of its own (`--layout`). Which one
starts first can still tilt the comparison (`--first`): run it each way and take the mean.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import platform
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from common import (  # noqa: E402  (next to this script)
    command_line,
    descendants_of,
    http_client,
    pin,
    proc_stats,
)
from ledger_parts import parts  # noqa: E402

from tests.harness import ClusterProcess, free_port, wait_for  # noqa: E402


def body(tokens: int, stream: bool) -> dict[str, object]:
    """The completion every client sends: `tokens` tokens (the stub answers that many)."""
    return {"model": "demo", "messages": [{"role": "user", "content": "Hi"}],
            "max_tokens": tokens, "stream": stream}


@dataclass(frozen=True)
class Round:
    """One timed burst against one cluster."""

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


ROLES = {  # command-line prefix of a Serve process -> its role in the tables
    "ray::ServeReplica:meterless:gateway": "gateway",
    "ray::ServeReplica:meterless:controller": "controller",
    "ray::ProxyActor": "proxy",
}


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


async def burst(
    cluster: ClusterProcess, seconds: float, concurrency: int, client: str = "lean",
    request: dict[str, object] | None = None,
) -> Round:
    """`concurrency` clients sending `request` (default: one token, not streamed) back to back
    for `seconds`."""
    request = request or body(1, stream=False)
    assert cluster.proc is not None
    async with http_client(concurrency, client, base_url=cluster.url) as http:
        done = 0
        cpu = serve_cpu(cluster.proc.pid)
        start = time.perf_counter()
        deadline = start + seconds

        async def client() -> None:
            nonlocal done
            while time.perf_counter() < deadline:
                r = await http.post("/v1/chat/completions", json=request)
                if r.status_code != 200:
                    raise RuntimeError(f"{r.status_code}: {r.text[:200]}")
                done += 1

        await asyncio.gather(*(client() for _ in range(concurrency)))
        elapsed = time.perf_counter() - start
        parts = {role: t - cpu[role] for role, t in serve_cpu(cluster.proc.pid).items()}
        return Round(done, elapsed, sum(parts.values()), parts)


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


def pin_gateways(clusters: list[ClusterProcess]) -> str:
    """Each gateway replica alone on the first core, everything else (this client, the stub
    agent, Ray, the controllers) on the others; what the run will say of it."""
    every = sorted(os.sched_getaffinity(0))
    if len(every) < 2:
        return "cores: one, shared by every process"
    first, rest = {every[0]}, set(every[1:])
    pin(os.getpid(), rest)  # this process, the stub agent, both clusters, and what they start
    for cluster in clusters:
        assert cluster.proc is not None
        for pid in descendants_of(cluster.proc.pid):
            if command_line(pid).startswith("ray::ServeReplica:meterless:gateway"):
                pin(pid, first)
    return (f"cores: each gateway replica on core {every[0]} (one at a time is busy); this "
            f"client, the stub agent, Ray and the controllers on {sorted(rest)}")


def ledger_requests(cluster: ClusterProcess) -> int:
    """Requests the cluster's ledger holds."""
    groups = httpx.get(
        f"{cluster.url}/admin/usage",
        params={"since": "all"},
        headers=cluster.admin_headers,
        timeout=30,
    ).json()
    return sum(g["requests"] for g in groups["groups"])


def report_parts(rounds: list[tuple[Round, Round]]) -> None:
    """The ledger's own work timed in-process, against the gateway's CPU per request."""
    found = parts()
    cpu_off = sum(off.cpu_s for _, off in rounds) / sum(off.requests for _, off in rounds)
    total = sum(found.values())
    each = ", ".join(f"{name} {us:.0f}" for name, us in found.items())
    print(
        f"the ledger's own work, timed in-process: {total:.0f} us per request ({each}) = "
        f"{100 * total / 1e6 / cpu_off:.1f}% of the Serve CPU per request without it"
    )


def report(rounds: list[tuple[Round, Round]]) -> float:
    """Print the rounds and the summary; returns the ledger's CPU cost per request."""
    print(
        f"{'round':>5}  {'on req/s':>9}  {'off req/s':>9}  {'on/off':>7}  "
        f"{'on CPU ms/req':>13}  {'off CPU ms/req':>14}"
    )
    for i, (on, off) in enumerate(rounds, 1):
        print(
            f"{i:>5}  {on.rps:>9.1f}  {off.rps:>9.1f}  {on.rps / off.rps:>7.3f}  "
            f"{on.cpu_ms:>13.2f}  {off.cpu_ms:>14.2f}"
        )
    on_rps = sum(on.requests for on, _ in rounds) / sum(on.seconds for on, _ in rounds)
    off_rps = sum(off.requests for _, off in rounds) / sum(off.seconds for _, off in rounds)
    ratios = [on.rps / off.rps for on, off in rounds]
    median = statistics.median(ratios)
    low, high = bootstrap_median(ratios)
    print(
        f"requests/s: on {on_rps:.1f}, off {off_rps:.1f}; median of the rounds' on/off "
        f"{median:.3f} (rounds from {min(ratios):.3f} to {max(ratios):.3f}) -> "
        f"{100 * (1 - median):.1f}% of throughput, 95% interval {100 * (1 - high):.1f}% to "
        f"{100 * (1 - low):.1f}%: {interval_verdict(1 - high, 1 - low)}"
    )
    cpu_on = sum(on.cpu_s for on, _ in rounds) / sum(on.requests for on, _ in rounds)
    cpu_off = sum(off.cpu_s for _, off in rounds) / sum(off.requests for _, off in rounds)
    cost = cpu_on / cpu_off - 1
    print(
        f"Serve CPU per request: on {1000 * cpu_on:.2f} ms, off {1000 * cpu_off:.2f} ms -> "
        f"the ledger adds {100 * cost:.1f}%: {verdict(cost)}"
    )
    n_on, n_off = sum(on.requests for on, _ in rounds), sum(off.requests for _, off in rounds)
    for role in ROLES.values():
        us_on = 1e6 * sum(on.parts[role] for on, _ in rounds) / n_on
        us_off = 1e6 * sum(off.parts[role] for _, off in rounds) / n_off
        share = (us_on - us_off) / 1e6 / cpu_off
        print(
            f"  {role:>10}: on {us_on:7.1f} us/request, off {us_off:7.1f}, difference "
            f"{us_on - us_off:+6.1f} us ({100 * share:+.1f}% of the Serve CPU per request, off)"
        )
    return cost


def bootstrap_median(values: list[float], resamples: int = 4000) -> tuple[float, float]:
    """A 95% interval for the median of `values` (percentile bootstrap, fixed seed)."""
    rng = random.Random(0)
    medians = sorted(
        statistics.median(rng.choices(values, k=len(values))) for _ in range(resamples)
    )
    return medians[int(0.025 * resamples)], medians[int(0.975 * resamples) - 1]


def interval_verdict(low: float, high: float) -> str:
    """PASS when the whole interval is under the 2% target, MISS when all of it is over."""
    if high < 0.02:
        return "PASS (target < 2%)"
    if low >= 0.02:
        return "MISS (target < 2%)"
    return "not resolved by this run (the interval straddles the 2% target)"


def verdict(cost: float) -> str:
    """PASS under the 2% target, else MISS."""
    return "PASS (target < 2%)" if cost < 0.02 else "MISS (target < 2%)"


async def measure(
    on: ClusterProcess, off: ClusterProcess, args: argparse.Namespace
) -> tuple[list[tuple[Round, Round]], int]:
    """Warm both up, then the alternating rounds; also returns all requests sent to `on`."""
    c, n, req = args.client, args.concurrency, body(args.tokens, args.stream)
    warm = await burst(on, 2.0, n, c, req)
    await burst(off, 2.0, n, c, req)
    rounds = []
    for i in range(args.rounds):
        if i % 2 == 0:
            a = await burst(on, args.seconds, n, c, req)
            b = await burst(off, args.seconds, n, c, req)
        else:
            b = await burst(off, args.seconds, n, c, req)
            a = await burst(on, args.seconds, n, c, req)
        rounds.append((a, b))
    return rounds, warm.requests + sum(a.requests for a, _ in rounds)


ALIKE = "METERLESS_BENCH_ALIKE"


def start_alike() -> None:
    """Run again with a fixed hash seed and no address-space randomization (Linux `setarch
    -R`), both inherited by everything this starts: two gateway replicas started alike then
    differ by the ledger alone. With random layouts, two processes running the same code were
    seen to differ by several percent in CPU per request, more than the effect measured."""
    setarch = shutil.which("setarch")
    if os.environ.get(ALIKE) or setarch is None:
        return
    env = {**os.environ, ALIKE: "1", "PYTHONHASHSEED": "0"}
    os.execve(setarch, [setarch, platform.machine(), "-R", sys.executable, *sys.argv], env)


def main() -> int:
    """Run the benchmark; exit 0 on PASS."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--client", choices=("lean", "httpx"), default="lean")
    parser.add_argument(
        "--layout",
        choices=("gateway-alone", "shared"),
        default="gateway-alone",
        help="gateway-alone: the gateway replica gets a core of its own, as on a head with "
        "cores to spare; shared: every process on every core",
    )
    parser.add_argument(
        "--first",
        choices=("on", "off"),
        default="on",
        help="which cluster starts first: the order alone has moved CPU per request by tens of "
        "microseconds, so run once each way and take the mean",
    )
    parser.add_argument(
        "--tokens", type=int, default=1,
        help="tokens per completion (the stub agent answers that many, one delta each)",
    )
    parser.add_argument("--stream", action="store_true", help="stream the completions (SSE)")
    parser.add_argument(
        "--random-layout",
        action="store_true",
        help="keep Python's random hash seed and the address-space randomization",
    )
    args = parser.parse_args()
    if not args.random_layout:
        start_alike()
    one, five, _ = os.getloadavg()
    print(f"machine: {os.cpu_count()} cores, load average {one:.2f} (1 min) {five:.2f} (5 min)")
    alike = "fixed hash seed, no address randomization" if os.environ.get(ALIKE) else "random"
    print(f"process layouts: {alike}")
    order = [("on", ()), ("off", ("--no-ledger",))]
    if args.first == "off":
        order.reverse()
    print(f"started first: the {args.first} cluster")
    print(f"workload: {args.concurrency} clients, completions of {args.tokens} token(s), "
          f"{'streamed' if args.stream else 'not streamed'}")
    with contextlib.ExitStack() as stack:
        root = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-ledger-")))
        agent = stack.enter_context(stub_agent())
        started = {}
        for name, extra in order:
            started[name] = start_cluster(root, name, agent, *extra)
            stack.callback(started[name].stop)
        on, off = started["on"], started["off"]
        if args.layout == "gateway-alone":
            print(pin_gateways([on, off]), flush=True)
        before = ledger_requests(on)
        rounds, sent = asyncio.run(measure(on, off, args))
        time.sleep(1.5)  # the last batch
        recorded = ledger_requests(on) - before
        cost = report(rounds)
        report_parts(rounds)
        print(
            f"ledger rows: {recorded} for {sent} requests sent (warm-up included); "
            f"rows of the --no-ledger cluster: {ledger_requests(off)}"
        )
    return 0 if cost < 0.02 else 1


if __name__ == "__main__":
    raise SystemExit(main())
