"""What the cluster benchmarks share: a real office on loopback, streamed requests, tables.

An office is node agents serving the generated `demo` model (one copy, shared by symlink) and
one `cluster up` that knows them as static peers, all started with the test harness and all
stopped on the way out, Ctrl-C included.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import signal
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from bench.lean_http import LeanClient
from cluster.node_client import NodeClient
from node_agent.demo_model import ensure_demo_model
from node_agent.types import (
    ChatMessage,
    Delta,
    Finished,
    GenerateRequest,
    Sampling,
)
from tests.harness import AgentProcess, ClusterProcess, share_models, wait_for

Messages = Sequence[tuple[str, str]]  # (role, content)
HttpClient = httpx.AsyncClient | LeanClient
CLIENTS = ("lean", "httpx")  # --client: the benchmarks' HTTP client (see bench/lean_http.py)
HTTP_ERRORS = (httpx.HTTPError, OSError, TimeoutError, RuntimeError)  # a request that failed


@dataclass(frozen=True, kw_only=True)
class Timing:
    """One streamed completion as the client saw it (perf_counter seconds)."""

    started: float
    first: float  # first token's text arrived
    last: float  # last token's text arrived
    tokens: int  # completion tokens, as the usage reports them
    node: str = ""  # who served it: x-meterless-node, or the agent's name when direct
    prompt_tokens: int = 0
    cached_tokens: int = 0  # prompt tokens the node found in its prompt cache
    request_id: str = ""  # the gateway's id for it (the completion's id without its prefix)
    node_ttft: float | None = None  # the node's own: its receipt to its first token
    # Through the gateway, from its ledger row: when its code took the request (perf_counter
    # seconds, like `started`) and how long the node's first token took to reach it from then.
    gateway_start: float | None = None
    gateway_ttft: float | None = None

    @property
    def outside(self) -> float:
        """Seconds of the TTFT spent outside the node (the client's, the network's, the
        gateway's): all of it but the node's own queue and prefill; NaN when the node's own
        is not known."""
        return math.nan if self.node_ttft is None else self.ttft - self.node_ttft

    @property
    def ttft(self) -> float:
        """Seconds from sending the request to the first token."""
        return self.first - self.started

    @property
    def itl(self) -> float:
        """Mean seconds between tokens after the first; NaN with one token."""
        return (self.last - self.first) / (self.tokens - 1) if self.tokens > 1 else math.nan

    def tokens_between(self, start: float, end: float) -> float:
        """Tokens that arrived within [start, end], spread evenly over first..last."""
        if self.last <= self.first:
            return float(self.tokens) if start <= self.first <= end else 0.0
        overlap = min(end, self.last) - max(start, self.first)
        return self.tokens * max(overlap, 0.0) / (self.last - self.first)


async def stream_grpc(
    client: NodeClient, messages: Messages, max_tokens: int, node: str = "", model: str = "demo"
) -> Timing:
    """A greedy chat completion straight to an agent, over the gateway's own NodeClient."""
    request = GenerateRequest(
        request_id=os.urandom(8).hex(),
        model=model,
        messages=tuple(ChatMessage(role, content) for role, content in messages),
        sampling=Sampling(max_tokens=max_tokens, temperature=0.0),
    )
    started = time.perf_counter()
    first = last = 0.0
    async for event in client.generate(request):
        if isinstance(event, Delta) and event.text:
            last = time.perf_counter()
            first = first or last
        elif isinstance(event, Finished):
            u = event.usage
            return Timing(
                started=started,
                first=first or last,
                last=last,
                tokens=u.completion_tokens,
                node=node,
                prompt_tokens=u.prompt_tokens,
                cached_tokens=u.cached_prompt_tokens,
                node_ttft=u.ttft_seconds if first else None,
            )
    raise RuntimeError(f"{client.address}: the stream ended without finishing")


async def stream_http(
    http: HttpClient, url: str, messages: Messages, max_tokens: int, model: str = "demo"
) -> tuple[Timing, str]:
    """A greedy streamed chat completion through the endpoint; also returns the answer's text."""
    body = {
        "model": model,
        "messages": [{"role": r, "content": c} for r, c in messages],
        "max_tokens": max_tokens,
        "temperature": 0,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    started = time.perf_counter()
    first = last = 0.0
    usage: dict[str, Any] = {}
    parts = []
    request_id = ""
    async with http.stream("POST", f"{url}/v1/chat/completions", json=body) as r:
        if r.status_code != 200:
            raise RuntimeError(f"{r.status_code}: {(await r.aread())[:200]!r}")
        node = r.headers.get("x-meterless-node", "")
        async for line in r.aiter_lines():
            if not line.startswith("data: {"):
                continue
            chunk = json.loads(line[6:])
            request_id = request_id or chunk["id"].removeprefix("chatcmpl-")
            if chunk["choices"] and (text := chunk["choices"][0]["delta"].get("content")):
                last = time.perf_counter()
                first = first or last
                parts.append(text)
            usage = chunk.get("usage") or usage
    details = usage.get("prompt_tokens_details") or {}
    timing = Timing(
        started=started,
        first=first or last,
        last=last,
        tokens=usage.get("completion_tokens", 0),
        node=node,
        prompt_tokens=usage.get("prompt_tokens", 0),
        cached_tokens=details.get("cached_tokens", 0),
        request_id=request_id,
    )
    return timing, "".join(parts)


def http_client(connections: int, kind: str = "lean", **kw: Any) -> HttpClient:
    """One keep-alive HTTP/1.1 pool for the endpoint, big enough for every concurrent stream.

    `lean` (the default) costs the shared cores least; `httpx` is what the openai client uses.
    """
    if kind == "lean":
        return LeanClient(connections=connections, timeout=120.0, **kw)
    limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
    return httpx.AsyncClient(limits=limits, timeout=httpx.Timeout(120.0), **kw)


def demo_models(root: Path) -> Path:
    """Generate the demo model once under `root`; returns the directory agents link to."""
    return ensure_demo_model(root / "shared").parent


def make_agents(
    root: Path,
    models: Path,
    speeds: dict[str, float],
    model: str = "demo",
    extra: Sequence[str] = (),
) -> list[AgentProcess]:
    """Unstarted agents serving `model`, one per name, capped at its decode steps/s (0: none),
    with `extra` flags."""
    agents = []
    for name, steps in speeds.items():
        args = ["--model", model, "--no-mdns", "--log-level", "warning", *extra]
        if steps:
            args += ["--max-steps-per-s", f"{steps:g}"]
        agents.append(AgentProcess(share_models(root / name, models), name=name, args=args))
    return agents


def start_cluster(
    root: Path, agents: Sequence[AgentProcess], routing: str, extra: Sequence[str] = ()
) -> ClusterProcess:
    """`cluster up` in front of `agents` with one routing policy (and `extra` flags); returns
    once every node is ready."""
    head = root / "-".join(["head", routing, *(f.strip("-") for f in extra)])
    head.mkdir(parents=True, exist_ok=True)
    peers = [arg for a in agents for arg in ("--peer", a.address)]
    cluster = ClusterProcess(
        head, args=("--no-local-agent", "--no-mdns", "--routing", routing, *extra, *peers)
    )
    try:
        cluster.start()
        wait_for(
            lambda: sum(n["state"] == "ready" for n in cluster.nodes()) == len(agents),
            60,
            "every node ready",
        )
    except BaseException:
        cluster.stop()
        log = (head / "cluster.log").read_text(errors="replace").splitlines()[-15:]
        flags = " ".join(["--routing", routing, *extra])
        print(
            f"`cluster up {flags}` did not get ready; its log ends with:",
            *log,
            sep="\n  ",
            file=sys.stderr,
        )
        raise
    return cluster


def node_names(cluster: ClusterProcess) -> dict[str, str]:
    """Node id -> the agent's name, from the admin API."""
    return {n["node_id"]: n["name"] for n in cluster.nodes()}


@contextlib.contextmanager
def workspace(prefix: str) -> Iterator[tuple[Path, contextlib.ExitStack]]:
    """A scratch directory and a stack of things to stop, stopped even on Ctrl-C."""
    with tempfile.TemporaryDirectory(prefix=prefix) as tmp:
        stack = contextlib.ExitStack()
        try:
            yield Path(tmp), stack
        finally:
            # A second Ctrl-C must not cut the clean-up short and leave agents or Ray behind.
            previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
            try:
                stack.close()
            finally:
                signal.signal(signal.SIGINT, previous)


def start_all(stack: contextlib.ExitStack, agents: Sequence[AgentProcess]) -> list[AgentProcess]:
    """Start agents side by side; each one's stop is registered first, failed starts included."""
    for agent in agents:
        stack.callback(agent.stop)
    with ThreadPoolExecutor(len(agents)) as pool:
        return list(pool.map(lambda a: a.start(), agents))


def cpu_seconds(pids: Sequence[int], *, descendants: bool = True) -> float:
    """CPU seconds used so far by these processes (and their descendants); NaN without /proc."""
    stats = proc_stats()
    if not stats:
        return math.nan
    every = [*pids, *(d for p in pids for d in descendants_of(p, stats))] if descendants else pids
    return sum(stats.get(pid, (0, 0.0))[1] for pid in every)


def descendants_of(root: int, stats: Mapping[int, tuple[int, float]] | None = None) -> list[int]:
    """Every process below `root` (children, theirs, ...), from `stats` or a fresh read."""
    stats = proc_stats() if stats is None else stats
    children: dict[int, list[int]] = {}
    for pid, (ppid, _) in stats.items():
        children.setdefault(ppid, []).append(pid)
    found, todo = [], [root]
    while todo:
        below = children.get(todo.pop(), [])
        found += below
        todo += below
    return found


def pin(pid: int, cores: set[int], *, below: bool = True) -> int:
    """Keep a process, every thread of it and (`below`) every process under it on `cores`
    (Linux). Threads and processes started later inherit the mask from the one that starts
    them. Returns how many threads were pinned."""
    pinned = 0
    for p in (pid, *(descendants_of(pid) if below else ())):
        with contextlib.suppress(OSError):
            for task in Path(f"/proc/{p}/task").iterdir():
                with contextlib.suppress(OSError):
                    os.sched_setaffinity(int(task.name), cores)
                    pinned += 1
    return pinned


LAYOUTS = {
    "shared": "every process on every core",
    "head-alone": "the head (cluster up, Ray, the gateway) on core 0; the agent and the "
    "benchmark's client on the others, as a node and a client machine would be",
    "node-alone": "the agent on the last core; the head and the client on the others",
}


def layout_cores(layout: str) -> dict[str, set[int]]:
    """Cores for each role (head, node, client) in one of LAYOUTS; every core for every role
    when there are fewer than two."""
    every = sorted(os.sched_getaffinity(0))
    if layout == "shared" or len(every) < 2:
        return {role: set(every) for role in ("head", "node", "client")}
    if layout == "head-alone":
        head, rest = {every[0]}, set(every[1:])
        return {"head": head, "node": rest, "client": rest}
    node, rest = {every[-1]}, set(every[:-1])
    return {"head": rest, "node": node, "client": rest}


def command_line(pid: int) -> str:
    """A process's command line, its arguments joined by spaces ("" once it has gone)."""
    with contextlib.suppress(OSError):
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
        return raw.replace(b"\0", b" ").decode(errors="replace").strip()
    return ""


def machine_jiffies() -> tuple[int, int]:
    """(busy, total) CPU clock ticks of the whole machine so far, every process counted."""
    with contextlib.suppress(OSError, ValueError, IndexError):
        fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
        idle = fields[3] + fields[4]  # idle + iowait
        return sum(fields) - idle, sum(fields)
    return 0, 0


def proc_stats() -> dict[int, tuple[int, float]]:
    """pid -> (parent pid, user + system CPU seconds) for every process /proc shows."""
    tick = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    out: dict[int, tuple[int, float]] = {}
    for entry in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            fields = entry.read_text().rsplit(")", 1)[1].split()
            busy = (int(fields[11]) + int(fields[12])) / tick  # utime + stime
            out[int(entry.parent.name)] = (int(fields[1]), busy)
    return out


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100), linearly interpolated; NaN for no values."""
    data = sorted(v for v in values if not math.isnan(v))
    if not data:
        return math.nan
    pos = (len(data) - 1) * q / 100
    low = math.floor(pos)
    high = min(low + 1, len(data) - 1)
    return data[low] + (data[high] - data[low]) * (pos - low)


def ms(seconds: float) -> str:
    """Seconds as milliseconds with two decimals."""
    return f"{seconds * 1000:.2f}"


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A plain-text table, columns right-aligned except the first."""
    cells = [list(map(str, headers)), *[[str(c) for c in row] for row in rows]]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = []
    for i, row in enumerate(cells):
        parts = [
            row[0].ljust(widths[0]),
            *(c.rjust(w) for c, w in zip(row[1:], widths[1:], strict=True)),
        ]
        lines.append("  ".join(parts).rstrip())
        if i == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def machine_line() -> str:
    """Cores and load average: the benchmarks share this machine with whatever else runs."""
    one, five, _ = os.getloadavg()
    return f"machine: {os.cpu_count()} cores, load average {one:.2f} (1 min) {five:.2f} (5 min)"


def verdict(ok: bool) -> str:
    """PASS or MISS."""
    return "PASS" if ok else "MISS"
