"""Overflow to a provider under a bursty load at twice the local capacity, against local-only.

    .venv/bin/python -m bench.overflow [--quick] [--steps 10] [--max-tokens 16] [--load 2]
                                       [--seconds 30] [--rounds 2] [--wait 0.3]

One agent capped at `--steps` decode steps a second, one stream at a time (engine option
`max_batch=1`), so its capacity is a fixed `steps / max_tokens` requests a second; `mlx_lm.server`
on loopback plays the cloud, priced at $2 in, $8 out per Mtok. One `cluster up` in front of the
agent, with `demo` overflowing to the cloud after `--wait` seconds, and two API keys: one
local-only, one not. First the unloaded TTFT: single requests, one after another. Then, in rounds
(the order flipped each round), the same Poisson arrivals at `--load` x the local capacity for
`--seconds` under each key: the local-only key's requests all queue on the node, the other's
overflow when the node cannot start them within the wait.

Printed: p50/p95 TTFT for each, the share of requests rented (x-meterless-node) and what they
cost at the cloud's prices, and the ratios against the goal: with overflow, p95 TTFT within 2x
of unloaded, and the share rented no more than the excess over local capacity: 1 - 1/load, or
the excess over what the node achieved under the local-only key where that is more (a loaded
machine slows the node below its cap).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import random
import subprocess
import sys
import time
from fractions import Fraction
from pathlib import Path
from typing import Any

import httpx

from bench.common import (
    Timing,
    demo_models,
    http_client,
    machine_line,
    make_agents,
    ms,
    percentile,
    start_all,
    start_cluster,
    table,
    verdict,
    workspace,
)
from cluster.cli.ports import free_port
from node_agent.demo_model import ensure_demo_model
from tests.harness import ClusterProcess, wait_for

PRICE_IN, PRICE_OUT = Fraction(2), Fraction(8)  # USD per Mtok, the cloud's list price here
RENTED = "provider:cloud"


def main() -> None:
    """Run the benchmark and print its table and verdicts."""
    args = _parser().parse_args()
    if args.quick:
        args.seconds, args.rounds = 20.0, 1
    with workspace("ml-overflow-") as (root, stack):
        models = demo_models(root)
        model = ensure_demo_model(root / "shared")  # the directory demo_models made
        cloud_url = _start_cloud(root, model, stack)
        extra = ("--engine-option", "max_batch=1")
        (agent,) = start_all(stack, make_agents(root, models, {"local": args.steps}, extra=extra))
        cluster = start_cluster(root, [agent], "fastest")
        stack.callback(cluster.stop)
        keys = _configure(cluster, cloud_url, str(model), args.wait)
        print(machine_line())
        results = asyncio.run(_measure(cluster.url, keys, args))
        if any(t.node == "failed" for mode in ("local-only", "overflow") for t in results[mode]):
            tail = (root / "cloud.log").read_text(errors="replace").splitlines()[-12:]
            print("the cloud's log ends with:", *tail, sep="\n  ", file=sys.stderr)
    _report(results, args)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--quick", action="store_true", help="one round of 20 s a mode")
    p.add_argument("--steps", type=float, default=10.0, help="the node's decode steps/s")
    p.add_argument("--max-tokens", type=int, default=16)
    p.add_argument("--load", type=float, default=2.0, help="offered load / local capacity")
    p.add_argument("--seconds", type=float, default=30.0, help="arrivals per mode and round")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--wait", type=float, default=0.3, help="the route's --overflow-wait")
    return p


def _start_cloud(root: Path, model: Path, stack: Any) -> str:
    """`mlx_lm.server` on loopback; its base URL once it answers."""
    port = free_port()
    log = open(root / "cloud.log", "wb")
    stack.callback(log.close)
    serve = ("--model", str(model), "--host", "127.0.0.1", "--port", str(port))
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlx_lm.server", *serve], stdout=log, stderr=subprocess.STDOUT
    )
    stack.callback(proc.wait, 30)
    stack.callback(proc.terminate)
    base = f"http://127.0.0.1:{port}/v1"
    wait_for(lambda: _answers(f"{base}/models"), 120, "mlx_lm.server to listen")
    return base


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def _configure(cluster: ClusterProcess, base: str, remote: str, wait: float) -> dict[str, str]:
    """The provider and the overflow route; the two keys, by mode."""
    price = f"{remote}={PRICE_IN},{PRICE_OUT}"
    add = ("providers", "add", "cloud", "--kind", "openai", "--base-url", base)
    _cli(cluster, *add, "--key-env", "CLOUD_KEY", "--price", price)
    _cli(cluster, "route", "demo", "--overflow", f"cloud:{remote}", "--overflow-wait", f"{wait:g}")
    keys = {}
    for mode, flags in (("local-only", ["--local-only"]), ("overflow", [])):
        made = _cli(cluster, "keys", "create", mode, *flags, "--json", "--url", cluster.url)
        keys[mode] = json.loads(made)["key"]
    return keys


def _cli(cluster: ClusterProcess, *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "cluster.cli", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**cluster.env, "CLOUD_KEY": "sk-bench-cloud"},
    )
    if done.returncode != 0:
        raise RuntimeError(f"cluster {' '.join(args[:2])}: {done.stderr.strip()}")
    return done.stdout


async def _measure(url: str, keys: dict[str, str], args: argparse.Namespace) -> dict[str, Any]:
    """Unloaded TTFTs, then each mode's timings over the rounds."""
    capacity = args.steps / args.max_tokens  # requests a second, one stream at a time
    rate = args.load * capacity
    out: dict[str, Any] = {"unloaded": [], "local-only": [], "overflow": []}
    async with http_client(64, "httpx", headers=_auth(keys["overflow"])) as http:
        await _stream(http, url, "warm up", args.max_tokens)
        await asyncio.sleep(1.0)  # the route file is read once a second
        for i in range(5):
            out["unloaded"].append(await _stream(http, url, f"alone {i}", args.max_tokens))
    for r in range(args.rounds):
        modes = ["local-only", "overflow"] if r % 2 == 0 else ["overflow", "local-only"]
        for mode in modes:
            async with http_client(256, "httpx", headers=_auth(keys[mode])) as http:
                burst = await _burst(http, url, rate, args, seed=r)
                out[mode] += burst
                if mode == "local-only":  # the node's queue never empties: its achieved rate
                    span = max(t.last for t in burst) - min(t.started for t in burst)
                    out["served_s"] = out.get("served_s", 0.0) + span
    return out


async def _burst(
    http: httpx.AsyncClient, url: str, rate: float, args: argparse.Namespace, seed: int
) -> list[Timing]:
    """Poisson arrivals at `rate` a second for `args.seconds`; every request's timing."""
    rng = random.Random(seed)  # the same arrivals for both modes of a round
    tasks, at = [], 0.0
    loop = asyncio.get_running_loop()
    start = loop.time()
    while (at := at + rng.expovariate(rate)) < args.seconds:
        await asyncio.sleep(max(start + at - loop.time(), 0.0))
        text = f"burst {seed} at {at:.3f}"
        tasks.append(asyncio.create_task(_stream(http, url, text, args.max_tokens)))
    return list(await asyncio.gather(*tasks))


async def _stream(http: httpx.AsyncClient, url: str, text: str, max_tokens: int) -> Timing:
    """A streamed chat completion of `demo`; its first token is the first delta of any kind
    (the demo model's tokens may open a reasoning block)."""
    body = {
        "model": "demo",
        "messages": [{"role": "user", "content": text}],
        "max_tokens": max_tokens,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    started = time.perf_counter()
    first, usage = 0.0, {}
    async with http.stream("POST", f"{url}/v1/chat/completions", json=body) as r:
        if r.status_code != 200:
            print(f"failed: {r.status_code} {(await r.aread())[:200]!r}", file=sys.stderr)
            return Timing(started=started, first=math.nan, last=math.nan, tokens=0, node="failed")
        async for line in r.aiter_lines():
            if not line.startswith("data: {"):
                continue
            chunk = json.loads(line[6:])
            delta = chunk["choices"][0]["delta"] if chunk["choices"] else {}
            if not first and any(
                delta.get(k) for k in ("content", "reasoning_content", "tool_calls")
            ):
                first = time.perf_counter()
            usage = chunk.get("usage") or usage
    return Timing(
        started=started,
        first=first or time.perf_counter(),
        last=time.perf_counter(),
        tokens=usage.get("completion_tokens", 0),
        node=r.headers.get("x-meterless-node", ""),
        prompt_tokens=usage.get("prompt_tokens", 0),
    )


def _auth(key: str) -> dict[str, str]:
    return {"authorization": f"Bearer {key}"}


def _report(results: dict[str, Any], args: argparse.Namespace) -> None:
    unloaded = percentile([t.first - t.started for t in results["unloaded"]], 50)
    rows, summary = [], {}
    for mode in ("local-only", "overflow"):
        timings: list[Timing] = results[mode]
        ttft = [t.first - t.started for t in timings]
        rented = [t for t in timings if t.node == RENTED]
        usd = float(sum((t.prompt_tokens * PRICE_IN + t.tokens * PRICE_OUT) for t in rented)) / 1e6
        share = len(rented) / len(timings)
        p95 = percentile(ttft, 95)
        summary[mode] = (p95, share)
        median, ratio = ms(percentile(ttft, 50)), f"{p95 / unloaded:.2f}"
        failed = sum(t.node == "failed" for t in timings)
        rows.append(
            [mode, len(timings), failed, median, ms(p95), ratio, f"{share:.0%}", f"{usd:.6f}"]
        )
    head = [
        "mode",
        "requests",
        "failed",
        "p50 TTFT ms",
        "p95 TTFT ms",
        "p95/unloaded",
        "rented",
        "cost $",
    ]
    print(f"unloaded TTFT (p50 of {len(results['unloaded'])}): {ms(unloaded)} ms")
    print(
        f"offered load: {args.load:g}x the local capacity ({args.steps:g} steps/s, "
        f"{args.max_tokens} tokens a request); overflow wait {args.wait:g} s"
    )
    print(table(head, rows))
    p95, share = summary["overflow"]
    excess = 1 - 1 / args.load
    # The node's achieved capacity under this machine's load may fall short of its cap: the
    # excess over what it did serve is what the desk could not have served.
    local = results["local-only"]
    achieved = len(local) / results["served_s"]
    offered = len(local) / (args.seconds * args.rounds)
    cap = args.steps / args.max_tokens
    print(
        f"local capacity achieved: {achieved:.2f} requests/s (cap {cap:.2f}); offered "
        f"{offered:.2f}/s; excess over achieved: {max(1 - achieved / offered, 0):.0%}"
    )
    excess = max(excess, 1 - achieved / offered)
    ratio = p95 / unloaded
    print(f"overflow p95 TTFT / unloaded: {ratio:.2f} (goal <= 2): {verdict(ratio <= 2)}")
    print(
        f"share rented: {share:.0%}, excess load {excess:.0%} (goal <=): {verdict(share <= excess)}"
    )
    print(f"local-only p95 TTFT / overflow's: {summary['local-only'][0] / p95:.1f}")


if __name__ == "__main__":
    main()
