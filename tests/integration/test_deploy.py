"""Desired state on real agents: deploy, a controller restart that reloads nothing, drain, undeploy.

Three agents start with no model; the cluster loads `demo` on them when it is deployed.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.harness import (
    AgentProcess,
    ClusterProcess,
    Outcome,
    cli,
    deployed,
    holders,
    load,
    loads,
    peered_office,
    share_models,
    wait_for,
)

pytestmark = pytest.mark.timeout(900)


@pytest.fixture(scope="module")
def office(
    tmp_path_factory: pytest.TempPathFactory, demo_model_dir: Path
) -> Iterator[tuple[ClusterProcess, list[AgentProcess]]]:
    """Three empty agents (the demo model on their disks) and a cluster that knows them.

    As deployed: the agents hold the join token, so every load and unload goes over TLS.
    """
    root = tmp_path_factory.mktemp("deploy")
    cluster = ClusterProcess(root / "head", plaintext_agents=False)
    token = cluster.join_token()
    agents = [
        AgentProcess(
            share_models(root / f"agent{i}", demo_model_dir.parent),
            name=f"node{i}",
            args=("--no-mdns",),
            join_token=token,
        )
        for i in range(3)
    ]
    with peered_office(cluster, agents, ready_timeout=60, want_models=0) as office:
        yield office


def test_deploy_two_replicas_loads_on_two_agents(
    office: tuple[ClusterProcess, list[AgentProcess]],
) -> None:
    cluster, agents = office
    dry = cli(cluster, "deploy", "demo", "--replicas", "2", "--dry-run", "--json")
    assert dry.returncode == 0, dry.stderr
    plan = json.loads(dry.stdout)
    assert len(plan["placement"]) == 2 and all(r["on_disk"] for r in plan["placement"])
    assert sum(loads(a) for a in agents) == 0  # a dry run changes nothing

    done = cli(cluster, "deploy", "demo", "--replicas", "2")
    assert done.returncode == 0, done.stderr
    assert "2 of 2 replicas ready" in done.stdout
    assert sorted(loads(a) for a in agents) == [0, 1, 1]
    assert len(holders(cluster)) == 2
    wait_for(
        lambda: httpx.get(f"{cluster.url}/v1/models", timeout=5).json()["data"],
        10,
        "the gateway to list demo",
    )
    r = httpx.post(
        f"{cluster.url}/v1/completions",
        json={"model": "demo", "prompt": "hello", "max_tokens": 4},
        timeout=60,
    )
    assert r.status_code == 200, r.text

    models = json.loads(cli(cluster, "models", "--json").stdout)["models"]
    (demo,) = models
    assert demo["desired"] == 2 and demo["ready"] == 2
    assert sorted(demo["ready_nodes"]) == holders(cluster)


def test_a_model_that_fits_nowhere_is_one_line_with_the_numbers(
    office: tuple[ClusterProcess, list[AgentProcess]],
) -> None:
    cluster, _ = office
    out = cli(
        cluster,
        "deploy",
        "demo",
        "--name",
        "huge",
        "--context",
        "2000000000",
        "--concurrency",
        "64",
        "--dry-run",
    )
    assert out.returncode == 1
    assert out.stderr.count("\n") == 1 and "Traceback" not in out.stderr
    assert "cannot place huge" in out.stderr and "GiB" in out.stderr and "budget" in out.stderr
    out = cli(cluster, "drain", "nobody")
    assert out.returncode == 1 and "unknown node 'nobody'" in out.stderr


def test_controller_restart_reloads_nothing_and_restores_placement(
    office: tuple[ClusterProcess, list[AgentProcess]],
) -> None:
    cluster, agents = office
    before = holders(cluster)
    counts, pids = [loads(a) for a in agents], [a.proc.pid for a in agents if a.proc]
    cluster.stop()
    cluster.start(want_models=1)
    wait_for(lambda: holders(cluster) == before, 60, "the placement to be restored")
    time.sleep(5)  # many reconcile ticks: any reload would have happened by now
    assert [loads(a) for a in agents] == counts
    assert [a.proc.pid for a in agents if a.proc] == pids
    assert holders(cluster) == before
    assert deployed(cluster)["desired"] == 2


def test_drain_under_load_moves_the_replica_first_and_fails_nothing(
    office: tuple[ClusterProcess, list[AgentProcess]],
) -> None:
    cluster, agents = office
    before = holders(cluster)
    victim, spare = before[0], next(a.name for a in agents if a.name not in before)
    stop, results = threading.Event(), list[Outcome]()
    threads = load(cluster.url, stop, results, workers=4)
    try:
        wait_for(lambda: len(results) >= 4, 60, "the load to get going")
        out = cli(cluster, "drain", victim)
        assert out.returncode == 0, out.stderr
        assert holders(cluster) == sorted([*(n for n in before if n != victim), spare])
        node = next(n for n in cluster.nodes() if n["name"] == victim)
        assert node["state"] == "draining" and "demo" not in node["models"]
        served_before = len(results)
        wait_for(lambda: len(results) >= served_before + 8, 60, "load after the drain")
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=90)
    failed = [r for r in results if not (r.status == 200 and r.done and not r.error_event)]
    assert not failed, failed[:3]
    assert len(results) >= 12
    out = cli(cluster, "uncordon", victim)
    assert out.returncode == 0 and "ready" in out.stdout


def test_a_drain_that_cannot_move_a_replica_says_why_and_keeps_it_serving(
    office: tuple[ClusterProcess, list[AgentProcess]],
) -> None:
    cluster, _ = office
    out = cli(cluster, "deploy", "demo", "--name", "solo", "--node", "node2")
    assert out.returncode == 0, out.stderr
    out = cli(cluster, "drain", "node2", "--timeout", "60")
    assert out.returncode == 1 and "solo has nowhere else to go" in out.stderr
    assert "pinned" in out.stderr
    assert holders(cluster, "solo") == ["node2"]
    r = httpx.post(
        f"{cluster.url}/v1/completions",
        json={"model": "solo", "prompt": "still here", "max_tokens": 4},
        timeout=60,
    )
    assert r.status_code == 200, r.text
    assert cli(cluster, "uncordon", "node2").returncode == 0
    assert cli(cluster, "undeploy", "solo").returncode == 0


def test_a_node_that_comes_back_gets_its_replica_again(
    office: tuple[ClusterProcess, list[AgentProcess]],
) -> None:
    cluster, agents = office
    out = cli(cluster, "deploy", "demo", "--replicas", "3")
    assert out.returncode == 0, out.stderr
    assert holders(cluster) == sorted(a.name for a in agents)
    victim = agents[0]
    before = loads(victim)
    victim.kill()
    wait_for(lambda: deployed(cluster)["unplaced"], 30, "the lost replica to have no node")
    reason = deployed(cluster)["unplaced"][0]["reason"]
    assert "already holds one" in reason  # nowhere else to go: it waits for its node
    victim.start()
    wait_for(
        lambda: holders(cluster) == sorted(a.name for a in agents),
        60,
        "the node to get its replica back",
    )
    assert loads(victim) == before + 1
    assert cli(cluster, "deploy", "demo", "--replicas", "2").returncode == 0


def test_a_model_that_keeps_failing_to_load_stops_with_its_reason(
    office: tuple[ClusterProcess, list[AgentProcess]], tmp_path: Path
) -> None:
    from node_agent.demo_model import model_config

    cluster, _ = office
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text(json.dumps(model_config()))
    (broken / "model.safetensors").write_bytes(b"not a safetensors file" * 1000)
    out = cli(cluster, "deploy", str(broken), "--name", "broken", "--timeout", "120")
    assert out.returncode == 1
    assert "broken keeps failing to load on node" in out.stderr and "(5 tries)" in out.stderr
    assert "Traceback" not in out.stderr
    entry = deployed(cluster, "broken")
    assert entry["crash_loops"] and entry["crash_loops"][0]["failures"] == 5
    listing = cli(cluster, "models")
    assert "stopped after 5 failed loads" in listing.stdout
    assert cli(cluster, "undeploy", "broken").returncode == 0


def test_undeploy_unloads_every_replica(office: tuple[ClusterProcess, list[AgentProcess]]) -> None:
    cluster, _ = office
    out = cli(cluster, "undeploy", "demo")
    assert out.returncode == 0, out.stderr
    assert all("demo" not in n["models"] for n in cluster.nodes())
    models = httpx.get(
        f"{cluster.url}/admin/models", headers=cluster.admin_headers, timeout=10
    ).json()["models"]
    assert models == []
