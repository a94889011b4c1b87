"""What the cluster secret costs: TLS and call signatures against plaintext, side by side.

    .venv/bin/python -m bench.tls [--rounds 5] [--calls 200] [--streams 8]

Two `node-agent`s on the `demo` model on loopback, one started with a join token and one without,
driven through NodeClient exactly as the gateway drives them. Per round, alternating which goes
first: the median latency of `--calls` sequential Describe calls (a unary call: TLS record
overhead plus signing and checking a signature), and aggregate tokens/s of `--streams` concurrent
generations. Also: how long a new channel takes to its first answer (the TLS handshake), and the
pure cost of signing and checking one call. Prints medians over rounds and secure/plaintext ratios.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
from pathlib import Path

from cluster.node_client import NodeClient
from node_agent.demo_model import ensure_demo_model
from node_agent.trust import CallVerifier, ClusterSecret, encode_token
from node_agent.types import Finished, GenerateRequest, Sampling
from tests.harness import AgentProcess, share_models


async def describe_ms(client: NodeClient, calls: int) -> float:
    """Median milliseconds of one Describe."""
    times = []
    for _ in range(calls):
        start = time.perf_counter()
        await client.describe()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


async def tokens_per_s(client: NodeClient, streams: int, max_tokens: int, tag: str) -> float:
    """Aggregate completion tokens/s of `streams` concurrent generations."""
    sampling = Sampling(max_tokens=max_tokens, temperature=0.0)

    async def one(i: int) -> int:
        req = GenerateRequest(
            request_id=f"{tag}-{i}",
            model="demo",
            text=f"Tell me about {tag} number {i}.",
            sampling=sampling,
        )
        async for event in client.generate(req):
            if isinstance(event, Finished):
                return event.usage.completion_tokens
        raise RuntimeError("the stream ended without Finished")

    start = time.perf_counter()
    tokens = sum(await asyncio.gather(*(one(i) for i in range(streams))))
    return tokens / (time.perf_counter() - start)


async def first_answer_ms(address: str, secret: ClusterSecret | None) -> float:
    """A new channel's first Describe: connection, handshake and call."""
    start = time.perf_counter()
    client = NodeClient(address, secret=secret)
    try:
        await client.describe()
    finally:
        await client.close()
    return (time.perf_counter() - start) * 1000


def signature_us(n: int = 20_000) -> tuple[float, float]:
    """Microseconds to sign one call and to check one."""
    secret, method = ClusterSecret(os.urandom(32)), "/meterless.agent.v1.Agent/Generate"
    verifier = CallVerifier(secret)
    nonces = [os.urandom(16) for _ in range(n)]
    start = time.perf_counter()
    headers = [secret.sign_call(method, now=time.time(), nonce=x) for x in nonces]
    signed = time.perf_counter()
    assert all(verifier.check(method, h, now=time.time()) is None for h in headers)
    checked = time.perf_counter()
    return (signed - start) / n * 1e6, (checked - signed) / n * 1e6


async def run(
    args: argparse.Namespace, agents: dict[str, tuple[str, ClusterSecret | None]]
) -> dict[str, dict[str, list[float]]]:
    """Alternating rounds over both agents."""
    out: dict[str, dict[str, list[float]]] = {
        k: {"describe": [], "tps": [], "first": []} for k in agents
    }
    clients = {k: NodeClient(a, secret=s) for k, (a, s) in agents.items()}
    for client in clients.values():  # warm-up
        await tokens_per_s(client, args.streams, args.max_tokens, "warm")
    for r in range(args.rounds):
        order = list(agents) if r % 2 == 0 else list(reversed(agents))
        for k in order:
            out[k]["describe"].append(await describe_ms(clients[k], args.calls))
            out[k]["tps"].append(
                await tokens_per_s(clients[k], args.streams, args.max_tokens, f"r{r}")
            )
            out[k]["first"].append(await first_answer_ms(*agents[k]))
    for client in clients.values():
        await client.close()
    return out


def main() -> None:
    """Start the two agents, measure, print."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--streams", type=int, default=8)
    parser.add_argument("--max-tokens", type=int, default=64)
    args = parser.parse_args()
    secret = ClusterSecret(os.urandom(32))
    with tempfile.TemporaryDirectory(prefix="meterless-bench-tls-") as scratch:
        root = Path(scratch)
        models = ensure_demo_model(root / "data")
        procs = {
            "plaintext": AgentProcess(
                share_models(root / "plain", models.parent),
                name="plain",
                args=("--model", "demo", "--no-mdns"),
            ),
            "secure": AgentProcess(
                share_models(root / "secure", models.parent),
                name="secure",
                args=("--model", "demo", "--no-mdns"),
                join_token=encode_token(secret),
            ),
        }
        try:
            for p in procs.values():
                p.start()
            agents = {
                "plaintext": (procs["plaintext"].address, None),
                "secure": (procs["secure"].address, secret),
            }
            results = asyncio.run(run(args, agents))
        finally:
            for p in procs.values():
                p.stop()
    med = {k: {m: statistics.median(v) for m, v in r.items()} for k, r in results.items()}
    sign, check = signature_us()
    print(f"{'':12}{'Describe ms':>14}{'tokens/s':>12}{'new channel ms':>16}")
    for k, m in med.items():
        print(f"{k:12}{m['describe']:>14.3f}{m['tps']:>12.1f}{m['first']:>16.2f}")
    secure, plain = med["secure"], med["plaintext"]
    print(
        f"{'secure/plain':12}{secure['describe'] / plain['describe']:>14.2f}"
        f"{secure['tps'] / plain['tps']:>12.2f}{secure['first'] / plain['first']:>16.2f}"
    )
    print(
        f"sign one call: {sign:.1f} us; check one call: {check:.1f} us "
        f"({args.rounds} rounds, {args.calls} calls, {args.streams} streams x "
        f"{args.max_tokens} tokens)"
    )


if __name__ == "__main__":
    main()
