"""Routing policies on nodes of different speeds, and prefix affinity on multi-turn chat.

    .venv/bin/python -m bench.routing [--quick] [--speeds 40,20,8] [--max-batch 1] [--clients 8]
                                      [--seconds 12]
                                      [--conversations 12] [--cache-entries 6] [--turns 6]
                                      [--history 500] [--think 1]
                                      [--skip-policies] [--skip-affinity]

Part 1. Three agents capped at different decode steps per second (`--max-steps-per-s`; 0 is
no cap), each decoding `--max-batch` streams at a time (the engine option `max_batch`; more
wait in its queue). With the default of one, a node's capacity is a fixed number of tokens/s
whatever the load, as on an accelerator that is already saturated, so capacities add up; the
caps keep all three well inside this machine's cores, so that they do not slow each other down.
Each node's capacity is measured alone, straight over gRPC with NodeClient, under the
same closed loop as the cluster gets (`--clients` clients, each sending the next request as soon
as the last one ends, same prompts and max_tokens, greedy). Then, for each policy, `cluster up
--routing POLICY` in front of all three, and the same closed loop through the endpoint. Tokens/s
counts the tokens that arrived inside the measured window (after a warm-up), each request's
tokens spread evenly between its first and last token; TTFT covers requests started in it;
shares come from the x-meterless-node header. Target: fastest >= 90% of the sum of capacities.

Part 2 (bench/multiturn.py). Three equal, uncapped agents, and conversations with long
histories side by side, turn by turn: first through `fastest` (prefix affinity on), then
through `fastest --no-affinity` (the same policy, blind to prefixes). Each setting gets its
own documents, so neither finds the other's prefixes in a cache. Each of these nodes keeps at
most `--cache-entries` conversations in its prompt cache (the engine option
`prompt_cache_entries`), fewer than there are conversations: a node serving a real model runs
out of cache memory long before the demo model does (4k tokens of a 7B model's KV cache is half
a GiB), and that is when affinity matters.
Target: affinity cuts p50 TTFT of turns >= 2 by >= 2x.

Starting Ray costs ~20 s, so there is one `cluster up` per setting, in front of all six agents:
part 1's three serve `demo`, part 2's three serve the same model under the name `chat`; part 1
runs on the three policies' clusters, part 2 on `fastest`'s (after part 1's load there is done)
and on a fourth, `fastest --no-affinity`.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import itertools
import os
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from bench.common import (
    HTTP_ERRORS,
    Timing,
    cpu_seconds,
    demo_models,
    http_client,
    machine_jiffies,
    machine_line,
    make_agents,
    ms,
    node_names,
    percentile,
    start_all,
    start_cluster,
    stream_grpc,
    stream_http,
    table,
    verdict,
    workspace,
)
from bench.multiturn import (
    AFFINITY_SETTINGS,
    CHAT_MODEL,
    NO_AFFINITY,
    Turn,
    conversations,
    document,
    print_affinity,
    token_counter,
)
from cluster.node_client import NodeClient
from node_agent.demo_model import demo_model_path
from tests.harness import AgentProcess

POLICIES = ("fastest", "least-outstanding", "round-robin")
PROMPTS = (
    "Say hello to the office.",
    "What is on the desk this morning?",
    "Name three things a small team needs.",
    "Write one sentence about quiet machines.",
    "Describe the printer in the corner.",
    "What did the team decide on Monday?",
)
CAPACITY_SHARE = 0.9
Send = Callable[[str], Awaitable[Timing]]


@dataclass(frozen=True)
class Window:
    """Every request of one closed-loop run and the window that counts."""

    timings: list[Timing]
    start: float
    end: float

    def tokens_per_s(self, node: str | None = None) -> float:
        """Tokens that arrived inside the window per second, of one node or of all."""
        tokens = sum(
            t.tokens_between(self.start, self.end)
            for t in self.timings
            if node is None or t.node == node
        )
        return tokens / (self.end - self.start)

    def inside(self) -> list[Timing]:
        """The requests started inside the window."""
        return [t for t in self.timings if self.start <= t.started < self.end]

    def ttft(self, q: float) -> float:
        """The q-th percentile TTFT of the requests started inside the window."""
        return percentile([t.ttft for t in self.inside()], q)


async def closed_loop(send: Send, clients: int, warmup_s: float, seconds: float) -> Window:
    """`clients` clients, each sending its next request as soon as its last one ended."""
    start = time.perf_counter() + warmup_s
    end = start + seconds
    order = itertools.count()
    timings: list[Timing] = []

    async def client() -> None:
        while time.perf_counter() < end:
            try:
                timings.append(await send(PROMPTS[next(order) % len(PROMPTS)]))
            except HTTP_ERRORS as exc:  # reported, not fatal to the run
                print(f"  a request failed: {exc!r}", flush=True)

    await asyncio.gather(*(client() for _ in range(clients)))
    return Window(timings, start, end)


async def alone(agent: AgentProcess, args: argparse.Namespace) -> Window:
    """The closed loop straight to one agent over gRPC."""
    client = NodeClient(agent.address)
    try:
        return await closed_loop(
            lambda p: stream_grpc(client, [("user", p)], args.max_tokens, node=agent.name),
            args.clients,
            args.warmup,
            args.seconds,
        )
    finally:
        await client.close()


async def through(url: str, names: dict[str, str], args: argparse.Namespace) -> Window:
    """The closed loop through the endpoint; each timing's node is the agent's name."""
    http = http_client(args.clients)

    async def send(prompt: str) -> Timing:
        timing, _ = await stream_http(http, url, [("user", prompt)], args.max_tokens)
        return dataclasses.replace(timing, node=names.get(timing.node, timing.node))

    try:
        return await closed_loop(send, args.clients, args.warmup, args.seconds)
    finally:
        await http.aclose()


@dataclass(frozen=True)
class Cores:
    """Cores busy on average during a run: the agents, `cluster up` with Ray, this client."""

    agents: float
    cluster: float
    client: float
    machine: float  # every process on the machine, other work included


class CoreMeter:
    """Reads CPU clocks before and after a run and turns them into cores busy."""

    def __init__(self, agent_pids: Sequence[int], cluster_pid: int | None) -> None:
        self.agent_pids, self.cluster_pid = list(agent_pids), cluster_pid
        self._before = self._read()

    def _read(self) -> list[float]:
        busy, total = machine_jiffies()
        cluster = cpu_seconds([self.cluster_pid]) if self.cluster_pid else 0.0
        return [
            cpu_seconds(self.agent_pids),
            cluster,
            cpu_seconds([os.getpid()], descendants=False),
            busy,
            total,
            time.perf_counter(),
        ]

    def cores(self) -> Cores:
        """Average cores busy since this meter was made."""
        d = [b - a for a, b in zip(self._before, self._read(), strict=True)]
        wall = d[5] or 1.0
        cores = os.cpu_count() or 1
        return Cores(d[0] / wall, d[1] / wall, d[2] / wall, cores * d[3] / (d[4] or 1))


def capacities(
    agents: Sequence[AgentProcess], args: argparse.Namespace
) -> dict[str, tuple[Window, Cores]]:
    """Part 1's baseline: each speed-capped agent alone under the closed loop."""
    out = {}
    pids = [a.proc.pid for a in agents if a.proc]
    for agent in agents:
        meter = CoreMeter(pids, None)
        window = asyncio.run(alone(agent, args))
        out[agent.name] = (window, meter.cores())
        print(f"  {agent.name} alone: {window.tokens_per_s():.0f} tokens/s", flush=True)
    return out


def run_policies(root: Path, models: Path, args: argparse.Namespace) -> None:
    """Both parts: one cluster per policy, in front of every agent; prints the tables."""
    speeds = dict(zip(("fast", "mid", "slow"), args.speeds, strict=True))
    chat = root / "shared" / CHAT_MODEL  # the demo model under another name, for part 2
    chat.symlink_to(demo_model_path(models.parent), target_is_directory=True)
    with workspace("meterless-bench-routing-agents-") as (scratch, stack):
        ranked = make_agents(
            scratch, models, speeds, extra=("--engine-option", f"max_batch={args.max_batch}")
        )
        equal = make_agents(
            scratch,
            models,
            {f"chat{i}": 0.0 for i in (1, 2, 3)},
            str(chat),
            ("--engine-option", f"prompt_cache_entries={args.cache_entries}"),
        )
        start_all(
            stack,
            [
                *(ranked if not args.skip_policies else ()),
                *(equal if not args.skip_affinity else ()),
            ],
        )
        capacity = capacities(ranked, args) if not args.skip_policies else {}
        count = token_counter(models)
        runs: dict[str, tuple[Window, Cores]] = {}
        chats: dict[str, list[Turn]] = {}
        settings = [*args.policies]
        if not args.skip_affinity and "fastest" in settings:
            settings.append(NO_AFFINITY)
        for setting in settings:
            policy, *extra = setting.split()
            try:
                cluster = start_cluster(
                    scratch, [a for a in (*ranked, *equal) if a.proc], policy, extra
                )
            except (AssertionError, RuntimeError) as exc:  # one policy's failure, not the rest
                print(f"  {setting}: no cluster ({exc}); skipped", flush=True)
                continue
            try:
                names = node_names(cluster)
                if not args.skip_policies and setting in args.policies:
                    assert cluster.proc is not None
                    meter = CoreMeter([a.proc.pid for a in ranked if a.proc], cluster.proc.pid)
                    window = asyncio.run(through(cluster.url, names, args))
                    runs[policy] = (window, meter.cores())
                    print(f"  {policy}: {window.tokens_per_s():.0f} tokens/s", flush=True)
                if not args.skip_affinity and setting in AFFINITY_SETTINGS:
                    documents = [
                        document(f"{'-'.join(setting.split())}-{c}", args.history, count)
                        for c in range(args.conversations)
                    ]
                    t0 = time.perf_counter()
                    chats[AFFINITY_SETTINGS[setting]] = asyncio.run(
                        conversations(cluster.url, names, documents, args)
                    )
                    print(
                        f"  {AFFINITY_SETTINGS[setting]}: {time.perf_counter() - t0:.0f}s",
                        flush=True,
                    )
            finally:
                cluster.stop()
    if runs and capacity:
        print_policies(speeds, capacity, runs, args)
    if len(chats) == len(AFFINITY_SETTINGS):
        print_affinity(chats, args)


def print_policies(
    speeds: dict[str, float],
    capacity: dict[str, tuple[Window, Cores]],
    runs: dict[str, tuple[Window, Cores]],
    args: argparse.Namespace,
) -> None:
    """The capacity table, the policy table, the cores they kept busy, and the verdict."""
    print(
        f"\nPart 1: {args.clients} closed-loop clients, {args.warmup:g} s warm-up + "
        f"{args.seconds:g} s measured, max_tokens={args.max_tokens}, temperature 0"
    )
    print("\neach node alone (straight over gRPC, same load)")
    rows: list[list[object]] = [
        [
            name,
            f"{speeds[name]:g}" if speeds[name] else "none",
            f"{w.tokens_per_s():.1f}",
            ms(w.ttft(50)),
            ms(w.ttft(99)),
            len(w.inside()),
            f"{c.agents:.2f}",
            f"{c.machine:.2f}",
        ]
        for name, (w, c) in capacity.items()
    ]
    total = sum(w.tokens_per_s() for w, _ in capacity.values())
    rows.append(["sum", "", f"{total:.1f}", "", "", "", "", ""])
    print(
        table(
            [
                "node",
                "steps/s cap",
                "tokens/s",
                "TTFT p50 ms",
                "TTFT p99 ms",
                "requests",
                "cores: agents",
                "machine",
            ],
            rows,
        )
    )
    names = list(capacity)
    print(
        "\nall three through the gateway, per policy (cores: the three agents / cluster up "
        "with Ray and the gateway / this client / the whole machine)"
    )
    rows = []
    for policy, (w, c) in runs.items():
        share = Counter(t.node for t in w.inside())
        n = max(sum(share.values()), 1)
        rows.append(
            [
                policy,
                f"{w.tokens_per_s():.1f}",
                f"{w.tokens_per_s() / total:.0%}",
                ms(w.ttft(50)),
                ms(w.ttft(99)),
                n,
                " / ".join(f"{share[k] / n:.0%}" for k in names),
                " / ".join(f"{w.tokens_per_s(k):.0f}" for k in names),
                f"{c.agents:.2f} / {c.cluster:.2f} / {c.client:.2f} / {c.machine:.2f}",
            ]
        )
    print(
        table(
            [
                "policy",
                "tokens/s",
                "of sum",
                "TTFT p50 ms",
                "TTFT p99 ms",
                "requests",
                f"requests {'/'.join(names)}",
                f"tokens/s {'/'.join(names)}",
                "cores",
            ],
            rows,
        )
    )
    if "fastest" in runs:
        ratio = runs["fastest"][0].tokens_per_s() / total
        print(
            f"fastest / sum of capacities: {ratio:.2f} (target >= {CAPACITY_SHARE:.2f}) "
            f"{verdict(ratio >= CAPACITY_SHARE)}"
        )
    if args.max_batch > 1:
        print(
            f"With --max-batch {args.max_batch} a node decodes up to that many streams in each "
            f"step, so its tokens/s grows with the streams it gets: alone it had all "
            f"{args.clients} clients, in the cluster it shares them, and the sum of capacities "
            "overstates what any policy can reach."
        )


def parse_args() -> argparse.Namespace:
    """The benchmark's flags."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a short smoke run")
    parser.add_argument(
        "--max-batch",
        type=int,
        default=1,
        help="streams each part-1 node decodes at once (the rest wait)",
    )
    parser.add_argument(
        "--speeds",
        default="40,20,8",
        help="decode steps/s caps of the fast, mid and slow node (0: none)",
    )
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=12.0, help="measured window per run")
    parser.add_argument("--warmup", type=float, default=3.0, help="seconds before the window")
    parser.add_argument("--max-tokens", type=int, default=24)
    parser.add_argument("--policies", default=",".join(POLICIES))
    parser.add_argument("--conversations", type=int, default=12)
    parser.add_argument(
        "--cache-entries",
        type=int,
        default=6,
        help="conversations each part-2 node keeps in its prompt cache",
    )
    parser.add_argument("--turns", type=int, default=6)
    parser.add_argument("--history", type=int, default=500, help="document tokens per chat")
    parser.add_argument("--answer-tokens", type=int, default=24)
    parser.add_argument(
        "--think",
        type=float,
        default=1.0,
        help="seconds between an answer and the next turn (0: at once)",
    )
    parser.add_argument(
        "--stagger", type=float, default=0.5, help="seconds between the starts of two conversations"
    )
    parser.add_argument("--skip-policies", action="store_true")
    parser.add_argument("--skip-affinity", action="store_true")
    args = parser.parse_args()
    args.speeds = [float(s) for s in args.speeds.split(",")]
    args.policies = [p for p in args.policies.split(",") if p]
    if args.skip_policies:  # part 2 alone needs only the clusters it runs on
        args.policies = [p for p in args.policies if p == "fastest"]
    if args.quick:
        args.seconds, args.warmup = min(args.seconds, 6.0), min(args.warmup, 2.0)
        args.conversations, args.turns = min(args.conversations, 6), min(args.turns, 3)
        args.cache_entries = min(args.cache_entries, 3)
        args.history = min(args.history, 300)
    return args


def main() -> None:
    """Run both parts, print, exit 0 (a benchmark reports; it does not fail)."""
    args = parse_args()
    print(machine_line(), flush=True)
    started_at = time.perf_counter()
    try:
        with workspace("meterless-bench-routing-") as (root, _):
            run_policies(root, demo_models(root), args)
    except KeyboardInterrupt:
        print("interrupted; everything this benchmark started has been stopped")
        return
    print(f"\n{machine_line()}; total {time.perf_counter() - started_at:.0f}s")


if __name__ == "__main__":
    main()
