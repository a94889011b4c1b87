"""A node killed under streaming load: no request that had not started streaming fails."""

from __future__ import annotations

import concurrent.futures
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.harness import (
    AgentProcess,
    ClusterProcess,
    load,
    peered_office,
    share_models,
    stream_once,
    wait_for,
)

pytestmark = pytest.mark.timeout(600)


@pytest.fixture(scope="module")
def office(
    tmp_path_factory: pytest.TempPathFactory, demo_model_dir: Path
) -> Iterator[tuple[ClusterProcess, list[AgentProcess]]]:
    """Three agents behind one cluster."""
    root = tmp_path_factory.mktemp("failover")
    agents = [
        AgentProcess(
            share_models(root / f"agent{i}", demo_model_dir.parent),
            name=f"node{i}",
            args=("--model", "demo", "--no-mdns"),
        )
        for i in range(3)
    ]
    cluster = ClusterProcess(root / "head")
    cluster.data_dir.mkdir()
    with peered_office(cluster, agents) as office:
        yield office


def node_state(cluster: ClusterProcess, name: str) -> str:
    """The state the admin API shows for the node called `name`."""
    return next(n["state"] for n in cluster.nodes() if n["name"] == name)


def test_killed_node_loses_no_unstarted_request_and_comes_back(
    office: tuple[ClusterProcess, list[AgentProcess]],
) -> None:
    cluster, agents = office
    victim = agents[0]
    stop, results = threading.Event(), []
    threads = load(cluster.url, stop, results)
    wait_for(lambda: len(results) >= 6, 60, "the load to get going")
    victim.kill()
    killed_at = time.monotonic()
    wait_for(lambda: node_state(cluster, victim.name) == "lost", 10, "the node to be marked lost")
    lost_after = time.monotonic() - killed_at
    time.sleep(2)  # keep the load running on the survivors for a while
    stop.set()
    for t in threads:
        t.join(timeout=90)

    broken = [r for r in results if not (r.status == 200 and r.done and not r.error_event)]
    # Only streams that had already started on the killed node may fail, and only in-band.
    for r in broken:
        assert r.status == 200 and r.tokens_seen > 0 and r.error_event and r.done, r
        assert r.usage and r.usage["prompt_tokens"] > 0 and r.usage["completion_tokens"] > 0, r
    victim_id = next(n["node_id"] for n in cluster.nodes() if n["name"] == victim.name)
    assert all(r.node == victim_id for r in broken)
    assert lost_after < 5.0, f"marked lost after {lost_after:.1f}s"
    assert len(results) - len(broken) >= 6

    victim.start()  # same port, same data dir: the same node
    wait_for(lambda: node_state(cluster, victim.name) == "ready", 20, "the node to be ready again")
    with concurrent.futures.ThreadPoolExecutor(6) as pool:  # enough load to need all three
        served = {
            o.node for o in pool.map(lambda i: stream_once(cluster.url, 900_000 + i), range(18))
        }
    assert victim_id in served, "the node that came back takes traffic again"
