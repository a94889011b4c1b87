"""Rebalance on real agents: after a skewed workload the busy model moves to the fast node,
loading there first and unloading the old replica only when idle: no request fails."""

from __future__ import annotations

import concurrent.futures
import json
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.harness import AgentProcess, ClusterProcess, cli, holders, loads, share_models, wait_for

pytestmark = pytest.mark.timeout(900)


@pytest.fixture(scope="module")
def office(
    tmp_path_factory: pytest.TempPathFactory, demo_model_dir: Path
) -> Iterator[tuple[ClusterProcess, list[AgentProcess]]]:
    """A fast and a slow (step-capped) empty agent behind one cluster."""
    root = tmp_path_factory.mktemp("rebalance")
    fast = AgentProcess(
        share_models(root / "fast", demo_model_dir.parent), name="a-fast", args=("--no-mdns",)
    )
    slow = AgentProcess(
        share_models(root / "slow", demo_model_dir.parent),
        name="b-slow",
        args=("--no-mdns", "--max-steps-per-s", "8"),
    )
    cluster = ClusterProcess(root / "head")
    cluster.data_dir.mkdir()
    try:
        for agent in (fast, slow):
            agent.start()
        cluster.args = (
            "--no-local-agent",
            "--no-mdns",
            "--peer",
            fast.address,
            "--peer",
            slow.address,
        )
        cluster.start(want_models=0)
        wait_for(
            lambda: sum(n["state"] == "ready" for n in cluster.nodes()) == 2, 60, "both nodes ready"
        )
        yield cluster, [fast, slow]
    finally:
        cluster.stop()
        fast.stop()
        slow.stop()


def ask(url: str, model: str, i: int) -> tuple[int, bool]:
    """One streamed completion: its status, and whether it ended cleanly with [DONE]."""
    body = {
        "model": model,
        "prompt": f"Tell me about {i}.",
        "max_tokens": 16,
        "stream": True,
        "seed": i,
    }
    done, error = False, False
    try:
        with httpx.stream("POST", f"{url}/v1/completions", json=body, timeout=120) as r:
            for line in r.iter_lines():
                done |= line == "data: [DONE]"
                error |= line.startswith("data: ") and '"error"' in line
            return r.status_code, done and not error
    except httpx.HTTPError:
        return 0, False


def test_rebalance_moves_the_busy_model_to_the_fast_node_and_loses_nothing(
    office: tuple[ClusterProcess, list[AgentProcess]],
) -> None:
    cluster, (fast, slow) = office
    for args in (
        ("demo", "--name", "cold", "--node", "a-fast"),
        ("demo", "--name", "hot", "--node", "b-slow"),
        ("demo", "--name", "hot"),
    ):  # unpinned: it stays where it is
        out = cli(cluster, "deploy", *args)
        assert out.returncode == 0, out.stderr
    assert holders(cluster, "hot") == ["b-slow"] and holders(cluster, "cold") == ["a-fast"]
    assert loads(slow, "hot") == 1

    # The skew: hot gets most of the work (on the slow node), cold a little (on the fast one).
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        jobs = [pool.submit(ask, cluster.url, "hot", i) for i in range(24)]
        jobs += [pool.submit(ask, cluster.url, "cold", i) for i in range(4)]
        assert all(j.result() == (200, True) for j in jobs)

    def recorded() -> bool:
        usage = httpx.get(
            f"{cluster.url}/admin/usage",
            params={"by": "model"},
            headers=cluster.admin_headers,
            timeout=10,
        )
        return sum(g["requests"] for g in usage.json()["groups"]) >= 28

    wait_for(recorded, 30, "the ledger to record the workload")
    dry = cli(cluster, "rebalance", "--dry-run", "--json")
    assert dry.returncode == 0, dry.stderr
    plan = json.loads(dry.stdout)
    assert [(m["model"], m["from"], m["to"]) for m in plan["moves"]] == [
        ("hot", "b-slow", "a-fast")
    ]
    assert plan["tps"]["a-fast"] > plan["tps"]["b-slow"] * 1.2
    assert holders(cluster, "hot") == ["b-slow"]  # a dry run moves nothing

    stop, outcomes = threading.Event(), list[tuple[int, bool]]()

    def work(w: int) -> None:
        i = 0
        while not stop.is_set():
            outcomes.append(ask(cluster.url, "hot", w * 1000 + i))
            i += 1

    threads = [threading.Thread(target=work, args=(w,), daemon=True) for w in range(4)]
    for t in threads:
        t.start()
    try:
        wait_for(lambda: len(outcomes) >= 4, 60, "the load to get going")
        out = cli(cluster, "rebalance")
        assert out.returncode == 0, out.stderr
        assert "hot: moved from b-slow to a-fast" in out.stdout
        count = len(outcomes)
        wait_for(lambda: len(outcomes) >= count + 8, 60, "load after the move")
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=120)
    assert holders(cluster, "hot") == ["a-fast"]
    assert all(o == (200, True) for o in outcomes), [o for o in outcomes if o != (200, True)]
    assert "hot" not in next(n for n in cluster.nodes() if n["name"] == "b-slow")["models"]
    assert loads(fast, "hot") == 1
