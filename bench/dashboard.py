"""What an open dashboard costs the gateway: `bench.gateway --quick`'s streams, with and without
dashboards polling, side by side in one run.

    .venv/bin/python -m bench.dashboard [--quick] [--dashboards 1] [--interval 3] [--rounds 6]

One agent serving `demo` and one `cluster up` in front of it, as in bench/gateway.py. Blocks of
requests through the endpoint alternate between two modes, the order flipped every block so the
machine's noise hits both alike: `alone`, and `dashboard`, in which `--dashboards` signed-in
pages each make the page's own refresh call (/ui/api/overview: the node table, the deployments,
the live totals from the ledger) every `--interval` seconds, as an open Overview does. Each mode
runs the same bursts of 32 streams and the same one-at-a-time requests. Printed: completion
tokens/s and p50 TTFT per mode, and their ratios (dashboard / alone); a ratio within the spread
of the blocks is noise.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time

import httpx

from bench.arrivals import burst, one_by_one
from bench.common import (
    HttpClient,
    Timing,
    demo_models,
    http_client,
    machine_line,
    make_agents,
    percentile,
    start_all,
    start_cluster,
    stream_http,
    table,
    workspace,
)
from tests.harness import ClusterProcess

PROMPTS = ("Say hello to the office.", "Name three things a small team needs.")
WIDE = 32
MODES = ("alone", "dashboard")


class Dashboards:
    """`count` signed-in pages polling the overview every `interval` seconds while `on`."""

    def __init__(self, cluster: ClusterProcess, count: int, interval: float) -> None:
        self.cluster, self.count, self.interval = cluster, count, interval
        self.on = False
        self.polls = 0
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        """Sign each page in and start its poll."""
        token = (self.cluster.config_dir / "admin-token").read_text().strip()
        for i in range(self.count):
            client = httpx.AsyncClient(base_url=self.cluster.url, timeout=30)
            r = await client.post("/ui/api/sign-in", json={"token": token})
            r.raise_for_status()
            self._tasks.append(asyncio.create_task(self._poll(client, i)))

    async def _poll(self, client: httpx.AsyncClient, i: int) -> None:
        await asyncio.sleep(self.interval * i / self.count)  # pages opened at different times
        try:
            while True:
                if self.on:
                    (await client.get("/ui/api/overview")).raise_for_status()
                    self.polls += 1
                await asyncio.sleep(self.interval)
        finally:
            await client.aclose()

    async def stop(self) -> None:
        """Close every page."""
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


async def block(
    http: HttpClient, url: str, streams: int, n: int, max_tokens: int
) -> tuple[list[Timing], float]:
    """One block of `n` requests (one at a time, or `n` at once); its timings and wall time."""
    prompts = [PROMPTS[i % len(PROMPTS)] for i in range(n)]

    async def send(prompt: str, tokens: int) -> Timing:
        return (await stream_http(http, url, [("user", prompt)], tokens))[0]

    t0 = time.perf_counter()
    timings = await (burst if streams > 1 else one_by_one)(send, prompts, max_tokens)
    return timings, time.perf_counter() - t0


async def run(args: argparse.Namespace) -> dict[str, dict[str, list[tuple[list[Timing], float]]]]:
    """Start an agent and a cluster; alternate the modes block by block at 1 and 32 streams."""
    with workspace("meterless-bench-dashboard-") as (root, stack):
        [agent] = start_all(stack, make_agents(root, demo_models(root), {"node": 0}))
        cluster = start_cluster(root, [agent], "fastest")
        stack.callback(cluster.stop)
        pages = Dashboards(cluster, args.dashboards, args.interval)
        await pages.start()
        http = http_client(2 * WIDE)
        results: dict[str, dict[str, list[tuple[list[Timing], float]]]] = {}
        try:
            for label, streams, n in (("x1", 1, 10), (f"x{WIDE}", WIDE, WIDE)):
                results[label] = {m: [] for m in MODES}
                for b in range(args.rounds + 1):  # block 0 of each mode warms up
                    for mode in MODES if b % 2 else MODES[::-1]:
                        pages.on = mode == "dashboard"
                        got = await block(http, cluster.url, streams, n, args.max_tokens)
                        if b:
                            results[label][mode].append(got)
            print(f"dashboard polls answered: {pages.polls}", flush=True)
            return results
        finally:
            await pages.stop()
            await http.aclose()


def report(results: dict[str, dict[str, list[tuple[list[Timing], float]]]]) -> None:
    """Tokens/s and p50 TTFT per mode, and dashboard / alone."""
    rows = []
    for label, modes in results.items():
        tps = {m: [sum(t.tokens for t in ts) / wall for ts, wall in bl] for m, bl in modes.items()}
        ttft = {m: percentile([t.ttft for ts, _ in bl for t in ts], 50) for m, bl in modes.items()}
        ratio = statistics.fmean(tps["dashboard"]) / statistics.fmean(tps["alone"])
        spread = statistics.pstdev(tps["alone"]) / statistics.fmean(tps["alone"])
        rows.append(
            [
                label,
                f"{statistics.fmean(tps['alone']):.1f}",
                f"{statistics.fmean(tps['dashboard']):.1f}",
                f"{ratio:.3f}",
                f"±{spread:.3f}",
                f"{ttft['alone'] * 1000:.1f}",
                f"{ttft['dashboard'] * 1000:.1f}",
            ]
        )
    headers = ["streams", "tok/s alone", "tok/s dashboard", "ratio", "block spread (alone)"]
    print(table([*headers, "p50 TTFT ms alone", "p50 TTFT ms dashboard"], rows))


def main() -> None:
    """Run, print, exit 0 (a benchmark reports; it does not fail)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="bench.gateway --quick's size")
    parser.add_argument("--dashboards", type=int, default=1, help="pages open and polling")
    parser.add_argument("--interval", type=float, default=3.0, help="seconds between polls")
    parser.add_argument("--rounds", type=int, default=6, help="blocks per mode and width")
    parser.add_argument("--max-tokens", type=int, default=16)
    args = parser.parse_args()
    if args.quick:
        args.rounds = min(args.rounds, 2)
    print(machine_line(), flush=True)
    started = time.perf_counter()
    report(asyncio.run(run(args)))
    print(f"{machine_line()}; total {time.perf_counter() - started:.0f}s")


if __name__ == "__main__":
    main()
