"""The controller finds agents over mDNS by itself; a node seen twice (mDNS and --peer) is one."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.harness import (
    AgentProcess,
    ClusterProcess,
    ensure_loopback_multicast,
    share_models,
    wait_for,
)

pytestmark = pytest.mark.timeout(400)

MDNS = ("--model", "demo", "--advertise-address", "127.0.0.1")


@pytest.fixture(scope="module")
def office(
    tmp_path_factory: pytest.TempPathFactory, demo_model_dir: Path
) -> Iterator[tuple[ClusterProcess, dict[str, AgentProcess]]]:
    """A cluster browsing loopback, one agent found by mDNS only, one by mDNS and --peer."""
    if not ensure_loopback_multicast():
        pytest.skip("loopback has no multicast and we are not root to switch it on")
    root = tmp_path_factory.mktemp("discovery")
    agents = {
        name: AgentProcess(share_models(root / name, demo_model_dir.parent), name=name, args=MDNS)
        for name in ("mdns-only", "mdns-and-peer")
    }
    cluster = ClusterProcess(root / "head")
    cluster.data_dir.mkdir()
    try:
        for agent in agents.values():
            agent.start()
        cluster.args = (
            "--no-local-agent",
            "--mdns-interface",
            "127.0.0.1",
            "--peer",
            agents["mdns-and-peer"].address,
        )
        cluster.start(want_models=1)
        yield cluster, agents
    finally:
        cluster.stop()
        for agent in agents.values():
            agent.stop()


def ready_names(cluster: ClusterProcess) -> list[str]:
    """Names of the ready nodes."""
    return sorted(n["name"] for n in cluster.nodes() if n["state"] == "ready")


def test_agents_appear_over_mdns_and_a_double_sighting_is_one_node(
    office: tuple[ClusterProcess, dict[str, AgentProcess]],
) -> None:
    cluster, agents = office
    wait_for(lambda: ready_names(cluster) == sorted(agents), 10, "both nodes ready")
    assert len(cluster.nodes()) == 2
    import httpx

    def sessions_to_it() -> list[dict]:  # type: ignore[type-arg]
        sessions = httpx.get(
            f"{cluster.url}/admin/nodes", timeout=10, headers=cluster.admin_headers
        ).json()["sessions"]
        return [s for s in sessions if s["address"] == agents["mdns-and-peer"].address]

    # Readiness can come from the peer session alone; the mDNS one may reach it a moment later.
    both = wait_for(
        lambda: len(sessions_to_it()) == 2 and sessions_to_it(),
        10,
        "both sessions to reach the node",
    )
    assert {s["via"] for s in both} == {"mdns", "peer"}
    assert len({s["node_id"] for s in both}) == 1
    assert len(cluster.nodes()) == 2


def test_a_new_agent_is_discovered_within_five_seconds(
    office: tuple[ClusterProcess, dict[str, AgentProcess]], tmp_path: Path, demo_model_dir: Path
) -> None:
    cluster, _ = office
    late = AgentProcess(
        share_models(tmp_path / "late", demo_model_dir.parent), name="late", args=MDNS
    )
    try:
        late.start()
        listening = time.monotonic()
        wait_for(lambda: "late" in ready_names(cluster), 5, "the new agent to be ready")
        print(f"discovered {time.monotonic() - listening:.2f}s after it listened")
        late.stop()  # a clean stop says goodbye over mDNS
        wait_for(lambda: "late" not in ready_names(cluster), 5, "the agent to leave")
    finally:
        late.stop()
