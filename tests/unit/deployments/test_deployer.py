"""The deployer's loop against fake node clients: loads, progress, failures, restarts."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

from cluster.deployments.deployer import Deployer
from cluster.deployments.loop import DeployerSettings
from cluster.deployments.placement import DeploymentSpec
from cluster.deployments.reconcile import ReconcileSettings
from cluster.deployments.store import DeployStore
from cluster.node_client import NodeDescription, NodeFailed, NodeStatusSample
from cluster.types import CostProfile, ModelName, NodeId, NodeState, NodeTable, NodeView
from node_agent.types import DiskModel, LoadProgress, LoadStage, ModelInfo, ModelStatus

DEMO = DiskModel(
    source="demo", weights_bytes=10 << 20, kv_bytes_per_token=2048, context_length=2048
)


class Agents:
    """Fake agents by address: what each has loaded, and every call made to them."""

    def __init__(self, fail: bool = False) -> None:
        self.loaded: dict[str, set[str]] = {}
        self.calls: list[tuple[str, str, str]] = []
        self.options: dict[str, dict[str, str]] = {}  # the last load's options, by address
        self.fail = fail

    def client(self, address: str) -> FakeClient:
        return FakeClient(self, address)


class FakeClient:
    def __init__(self, agents: Agents, address: str) -> None:
        self.agents, self.address = agents, address

    async def close(self) -> None:
        """Nothing to close."""

    async def load_model(
        self,
        model: str,
        *,
        name: str = "",
        engine: str = "",
        context_length: int = 0,
        options: dict[str, str] | None = None,
    ) -> AsyncIterator[LoadProgress]:
        self.agents.calls.append(("load", self.address, name))
        self.agents.options[self.address] = dict(options or {})
        yield LoadProgress(stage=LoadStage.LOADING, message="loading", bytes_done=1, bytes_total=2)
        if self.agents.fail:
            raise NodeFailed(f"{self.address}: out of memory")
        self.agents.loaded.setdefault(self.address, set()).add(name)
        yield LoadProgress(stage=LoadStage.READY, message="ready")

    async def unload_model(self, model: str) -> bool:
        self.agents.calls.append(("unload", self.address, model))
        self.agents.loaded.get(self.address, set()).discard(model)
        return True


def view(name: str, models: tuple[str, ...] = ()) -> NodeView:
    return NodeView(
        node_id=NodeId(name),
        name=name,
        address=f"{name}:1",
        engines=("mlx",),
        state=NodeState.READY,
        models=tuple(ModelName(m) for m in models),
        memory_total_bytes=8 << 30,
    )


def describe(d: Deployer, name: str, loaded: tuple[str, ...] = ()) -> None:
    d.described(
        NodeDescription(
            node_id=name,
            name=name,
            agent_version="0",
            protocol_version="1.0",
            engines=("mlx",),
            accelerator_kind="cpu",
            accelerator_name="",
            memory_total_bytes=8 << 30,
            memory_available_bytes=8 << 30,
            cost=CostProfile(),
            models=tuple(
                ModelInfo(name=m, engine="mlx", source="demo", memory_bytes=1, context_length=2048)
                for m in loaded
            ),
            disk_models=(DEMO,),
        ),
        f"{name}:1",
    )


def status(d: Deployer, name: str, loaded: set[str]) -> None:
    d.status(
        NodeStatusSample(
            node_id=name,
            unix_ms=0,
            models=tuple(
                ModelStatus(
                    model=m,
                    running=0,
                    waiting=0,
                    generated_tokens=0,
                    prompt_tokens=0,
                    cached_prompt_tokens=0,
                    prompt_cache_hits=0,
                    requests_finished=0,
                    memory_bytes=1,
                    busy_seconds=0.0,
                )
                for m in sorted(loaded)
            ),
            memory_used_bytes=0,
            memory_available_bytes=0,
            power_watts=None,
            busy_seconds=0,
        ),
        f"{name}:1",
    )


async def settle(d: Deployer) -> None:
    """Let the actions the last tick started run to their end."""
    for _ in range(20):
        await asyncio.sleep(0)
    await asyncio.gather(*d._tasks)


async def test_deploy_loads_each_replica_once_and_a_restart_loads_nothing(tmp_path: Path) -> None:
    agents, now = Agents(), [0.0]
    path = tmp_path / "deployments.sqlite3"

    def make() -> Deployer:
        return Deployer(
            DeployStore(path),
            client_factory=agents.client,  # type: ignore[arg-type]
            clock=lambda: now[0],
        )

    d = make()
    await d.open()
    for n in ("a", "b", "c"):
        describe(d, n)
    table = NodeTable(version=1, nodes=(view("a"), view("b"), view("c")))
    answer = await d.deploy(DeploymentSpec(name="demo", model="demo", replicas=2), table)
    assert len(answer["placement"]) == 2
    for _ in range(3):  # ticks while loads run must not ask twice
        await d.tick(table)
    await settle(d)
    loads = [c for c in agents.calls if c[0] == "load"]
    assert len(loads) == 2 and len({c[1] for c in loads}) == 2
    holders = sorted(a for a, m in agents.loaded.items() if "demo" in m)
    assert d.report(table)[0]["replicas"][0]["stage"] == "ready"
    await d.close()

    # A new controller: the same store, the agents as they are now.
    d2 = make()
    await d2.open()
    now[0] += 100
    for n in ("a", "b", "c"):
        held = tuple(agents.loaded.get(f"{n}:1", ()))
        describe(d2, n, held)
        status(d2, n, set(held))
    table = NodeTable(
        version=2,
        nodes=tuple(view(n, tuple(agents.loaded.get(f"{n}:1", ()))) for n in ("a", "b", "c")),
    )
    for _ in range(3):
        await d2.tick(table)
    await settle(d2)
    assert len([c for c in agents.calls if c[0] == "load"]) == 2
    assert sorted(f"{n}:1" for n in d2.assignments["demo"]) == holders
    await d2.close()


async def test_a_chosen_tool_parser_goes_with_the_load_and_the_report() -> None:
    agents = Agents()
    d = Deployer(DeployStore(":memory:"), client_factory=agents.client)  # type: ignore[arg-type]
    await d.open()
    for n in ("a", "b"):
        describe(d, n)
    table = NodeTable(version=1, nodes=(view("a"), view("b")))
    await d.deploy(DeploymentSpec(name="plain", model="demo", nodes=(NodeId("a"),)), table)
    answer = await d.deploy(
        DeploymentSpec(name="coder", model="demo", nodes=(NodeId("b"),), tool_parser="none"),
        table,
    )
    assert answer["spec"]["tool_parser"] == "none"
    await d.tick(table)
    await settle(d)
    assert agents.options == {"a:1": {}, "b:1": {"tool_parser": "none"}}
    assert {r["model"]: r["spec"]["tool_parser"] for r in d.report(table)} == {
        "coder": "none",
        "plain": "",
    }
    await d.close()


async def test_failed_loads_back_off_then_stop_with_the_reason(tmp_path: Path) -> None:
    agents, now = Agents(fail=True), [0.0]
    settings = DeployerSettings(
        reconcile=ReconcileSettings(backoff_min_s=1.0, backoff_max_s=4.0, crash_loop_after=3)
    )
    d = Deployer(
        DeployStore(":memory:"),
        client_factory=agents.client,  # type: ignore[arg-type]
        clock=lambda: now[0],
        settings=settings,
    )
    await d.open()
    describe(d, "a")
    table = NodeTable(version=1, nodes=(view("a"),))
    await d.deploy(DeploymentSpec(name="demo", model="demo"), table)
    tries = []
    for t in range(0, 20):
        now[0] = t * 0.5
        await d.tick(table)
        await settle(d)
        tries.append(len(agents.calls))
    # First try at once, then after 1 s, then after 2 s more; then never again.
    assert tries[0] == 1 and tries[1] == 1 and tries[2] == 2 and tries[5] == 2
    assert tries[6] == 3 and tries[-1] == 3
    (entry,) = d.report(table)
    (loop,) = entry["crash_loops"]
    assert loop["failures"] == 3 and "out of memory" in loop["reason"]
    assert "kept failing on a" in entry["unplaced"][0]["reason"]
    await d.close()
