"""Routing against real nodes of different speeds, and the first-token deadline."""

from __future__ import annotations

import collections
import concurrent.futures
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from cluster.errors import UpstreamTimeout
from cluster.gateway.clients import ClientPool
from cluster.gateway.forward import Forwarder, ForwardSettings
from cluster.gateway.routing import RouteRequest, make_router
from cluster.types import ModelName, NodeId, NodeState, NodeTable, NodeView
from node_agent.types import GenerateRequest, Sampling
from tests.harness import AgentProcess, ClusterProcess, share_models, wait_for

pytestmark = pytest.mark.timeout(600)


@pytest.fixture(scope="module")
def fast_and_slow(
    tmp_path_factory: pytest.TempPathFactory, demo_model_dir: Path
) -> Iterator[tuple[ClusterProcess, dict[str, AgentProcess]]]:
    """An unthrottled agent and one paced to a few decode steps a second, behind one cluster."""
    root = tmp_path_factory.mktemp("speeds")
    agents = {
        "fast": AgentProcess(
            share_models(root / "fast", demo_model_dir.parent),
            name="fast",
            args=("--model", "demo", "--no-mdns"),
        ),
        "slow": AgentProcess(
            share_models(root / "slow", demo_model_dir.parent),
            name="slow",
            args=("--model", "demo", "--no-mdns", "--max-steps-per-s", "6"),
        ),
    }
    cluster = ClusterProcess(root / "head")
    cluster.data_dir.mkdir()
    try:
        for agent in agents.values():
            agent.start()
        cluster.args = (
            "--no-local-agent",
            "--no-mdns",
            *[arg for a in agents.values() for arg in ("--peer", a.address)],
        )
        cluster.start()
        yield cluster, agents
    finally:
        cluster.stop()
        for agent in agents.values():
            agent.stop()


def burst(url: str, n: int, workers: int, seed: int) -> collections.Counter[str]:
    """`n` completions from `workers` concurrent clients; how many each node served."""

    def one(i: int) -> str:
        body = {"model": "demo", "prompt": f"Note {seed + i}:", "max_tokens": 24, "seed": i}
        r = httpx.post(f"{url}/v1/completions", json=body, timeout=120)
        assert r.status_code == 200, r.text
        return r.headers["x-meterless-node"]

    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
        return collections.Counter(pool.map(one, range(n)))


def test_the_fast_node_gets_proportionally_more(
    fast_and_slow: tuple[ClusterProcess, dict[str, AgentProcess]],
) -> None:
    cluster, _ = fast_and_slow
    wait_for(
        lambda: len([n for n in cluster.nodes() if n["state"] == "ready"]) == 2,
        30,
        "both nodes ready",
    )

    def measured() -> bool:
        burst(cluster.url, 8, 4, seed=0)  # probes and load until both speeds are measured
        return all(n["tps_measured"] for n in cluster.nodes())

    wait_for(measured, 180, "both nodes' speed to be measured", interval=0)
    speeds = {n["name"]: n["decode_tps"] for n in cluster.nodes()}
    assert speeds["fast"] > 3 * speeds["slow"], speeds
    ids = {n["name"]: n["node_id"] for n in cluster.nodes()}
    served = burst(cluster.url, 30, 6, seed=1000)
    assert served[ids["fast"]] >= 3 * served[ids["slow"]], (served, speeds)


def _one_node_table(address: str) -> NodeTable:
    node = NodeView(
        node_id=NodeId("slow"),
        name="slow",
        address=address,
        engines=("mlx",),
        state=NodeState.READY,
        models=(ModelName("demo"),),
        decode_tps=1.0,
        tps_measured=True,
    )
    return NodeTable(version=1, nodes=(node,))


async def test_a_node_that_misses_the_first_token_deadline_gives_504(
    tmp_path: Path, demo_model_dir: Path
) -> None:
    agent = AgentProcess(
        share_models(tmp_path / "crawl", demo_model_dir.parent),
        name="crawl",
        args=("--model", "demo", "--no-mdns", "--max-steps-per-s", "0.5"),
    )
    agent.start()
    pool = ClientPool()
    try:
        forwarder = Forwarder(
            make_router("fastest"), pool, ForwardSettings(first_token_timeout_s=0.3, max_attempts=2)
        )
        request = GenerateRequest(
            request_id="t", model="demo", text="Slowly now", sampling=Sampling(max_tokens=4)
        )
        events = forwarder.stream(
            _one_node_table(agent.address), request, RouteRequest(ModelName("demo"), 4)
        )
        with pytest.raises(UpstreamTimeout) as err:
            await anext(events)
        assert err.value.status == 504
        assert forwarder.load.in_flight == {}  # the abandoned attempt was accounted for
    finally:
        await pool.retain(set())
        agent.stop()
