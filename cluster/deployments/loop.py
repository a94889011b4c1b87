"""The desired-state loop: specs + node facts -> placement -> reconcile plan -> node calls.

Each tick derives everything again from what is stored (specs, the last placement, cordons)
and what nodes last said (Describe, status); the pure `placement.place` and `reconcile.plan`
decide, on inputs `deploy_facts` builds, and this module only carries the actions out:
LoadModel streams (their progress kept for the admin), UnloadModel calls, and routing
withdrawals through the controller's inventory. A step that fails is logged and the loop goes
on; it never exits. The admin's operations on the same desired state are in `deployer`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cluster.deployments import facts, placement, reconcile
from cluster.deployments.facts import ModelFacts, Progress, model_size
from cluster.deployments.placement import DeploymentSpec, ModelSize, NodeSlot, Placement
from cluster.deployments.reconcile import Failure, Load, Pair, Unload, Withdraw
from cluster.deployments.store import DeployStore
from cluster.node_client import NodeClient, NodeDescription, NodeError, NodeStatusSample
from cluster.types import ModelName, NodeId, NodeTable, NodeView
from node_agent.types import LoadStage

logger = logging.getLogger(__name__)

SETTLE_S = 3.0  # how long a load's or unload's own answer beats a status that predates it


@dataclass(frozen=True, kw_only=True)
class DeployerSettings:
    """Knobs of the loop."""

    tick_s: float = 0.5
    placement: placement.PlacementSettings = field(default_factory=placement.PlacementSettings)
    reconcile: reconcile.ReconcileSettings = field(default_factory=reconcile.ReconcileSettings)


def load_options(spec: DeploymentSpec) -> dict[str, str]:
    """The engine options a spec's loads carry: the tool parser, when it chooses one."""
    return {"tool_parser": spec.tool_parser} if spec.tool_parser else {}


class DeployLoop:
    """Owns the desired state and the loop that makes it so."""

    def __init__(
        self,
        store: DeployStore,
        *,
        client_factory: Callable[[str], NodeClient] = NodeClient,
        clock: Callable[[], float] = time.monotonic,
        withdraw: Callable[[NodeId, ModelName, bool], None] = lambda node, model, on: None,
        drain: Callable[[NodeId, bool], None] = lambda node, on: None,
        settings: DeployerSettings | None = None,
        data_dir: Path | None = None,
    ) -> None:
        self.store = store
        self._data_dir = data_dir  # where this machine keeps models (the demo model, say)
        self.settings = settings or DeployerSettings()
        self._client_factory, self._clock = client_factory, clock
        self._withdraw_fn, self._drain_fn = withdraw, drain
        self.specs: dict[ModelName, DeploymentSpec] = {}
        self.assignments: dict[ModelName, tuple[NodeId, ...]] = {}
        self.cordons: set[NodeId] = set()
        self.placement = Placement(assignments={})
        self._facts: dict[NodeId, ModelFacts] = {}
        self._local_sizes: dict[str, ModelSize | None] = {}  # by model reference
        self._progress: dict[Pair, Progress] = {}
        self._failures: dict[Pair, Failure] = {}
        self._loading: set[Pair] = set()
        self._unloading: set[Pair] = set()
        self._settling: dict[Pair, tuple[bool, float]] = {}  # pair -> (loaded?, since)
        self._withdrawn: dict[Pair, float] = {}
        self._drained: set[NodeId] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._wake = asyncio.Event()

    async def open(self) -> None:
        """Read the desired state back from the store."""
        await self.store.open()
        specs, self.assignments, self.cordons = await self.store.load()
        self.specs = {s.name: s for s in specs}
        for spec in specs:
            await self._size_locally(spec)
        logger.info("deployments: %d specs, %d cordoned nodes", len(specs), len(self.cordons))

    async def close(self) -> None:
        """Stop every action in flight and close the store."""
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.store.close()

    # -- observations ----------------------------------------------------------------------

    def described(self, desc: NodeDescription, address: str) -> None:
        """A node's Describe answer: its address, models on disk and loaded ones."""
        facts = self._facts.setdefault(NodeId(desc.node_id), ModelFacts())
        facts.address = address
        facts.disk = {d.source: d for d in desc.disk_models}
        facts.loaded = {ModelName(m.name): m.memory_bytes for m in desc.models}

    def status(self, sample: NodeStatusSample, address: str) -> None:
        """A node's status: what is loaded and busy now."""
        facts = self._facts.setdefault(NodeId(sample.node_id), ModelFacts(address=address))
        facts.address = address
        facts.loaded = {ModelName(m.model): m.memory_bytes for m in sample.models}
        facts.busy = {ModelName(m.model): m.running + m.waiting for m in sample.models}

    # -- the loop --------------------------------------------------------------------------

    async def run(self, table: Callable[[], NodeTable], settled: asyncio.Event) -> None:
        """Reconcile on every tick and on every admin change, forever."""
        await settled.wait()  # a half-discovered cluster would get replicas placed twice
        while True:
            try:
                await self.tick(table())
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("reconcile step failed")
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.settings.tick_s)

    async def tick(self, table: NodeTable) -> None:
        """One pass: place, persist a changed placement, plan, start the actions."""
        now = self._clock()
        slots = self._slots(table, now)
        avoid = frozenset(
            p
            for p, f in self._failures.items()
            if reconcile.crash_looped(f, self.settings.reconcile)
        )
        self.placement = placement.place(
            list(self.specs.values()),
            self._sizes(),
            slots,
            self.assignments,
            self.settings.placement,
            avoid,
        )
        wanted = {m: n for m, n in self.placement.assignments.items()}
        if wanted != self.assignments:
            logger.info("placement: %s", wanted)
            self.assignments = wanted
            await self.store.put_assignments(wanted)
        self._restore_withdrawn(table)
        observed = self._observed(table, now)
        actions = reconcile.plan(
            list(self.specs.values()), self.assignments, observed, self.settings.reconcile
        )
        for action in actions:
            self._act(action, table, now)
        self._apply_drains(table)
        await self._forget_undeployed()

    async def _forget_undeployed(self) -> None:
        """Drop an undeployed spec once no node holds its model any more."""
        for name in [n for n, s in self.specs.items() if s.replicas == 0]:
            held = any(name in f.loaded for f in self._facts.values())
            busy = any(p[1] == name for p in (*self._unloading, *self._withdrawn))
            if not held and not busy:
                del self.specs[name]
                self.assignments.pop(name, None)
                await self.store.delete_spec(name)
                logger.info("%s is undeployed", name)

    def _act(self, action: reconcile.Action, table: NodeTable, now: float) -> None:
        node = table.get(action.node_id)
        if node is None:
            return
        if isinstance(action, Withdraw):
            pair = (action.node_id, action.model)
            logger.info("withdrawing %s on %s from routing", action.model, node.name)
            self._withdrawn[pair] = now
            self._withdraw_fn(action.node_id, action.model, True)
        elif isinstance(action, Load):
            self._loading.add((action.node_id, action.spec.name))
            self._spawn(self._load(node, action.spec))
        elif isinstance(action, Unload):
            self._unloading.add((action.node_id, action.model))
            self._spawn(self._unload(node, action.model))

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _load(self, node: NodeView, spec: DeploymentSpec) -> None:
        pair = (node.node_id, spec.name)
        self._progress[pair] = Progress(stage="starting", message=f"asking {node.name}")
        logger.info("loading %s (%s) on %s", spec.name, spec.model, node.name)
        client = self._client_factory(node.address)
        try:
            async for event in client.load_model(
                spec.model,
                name=spec.name,
                engine=spec.engine,
                context_length=spec.context_length,
                options=load_options(spec),
            ):
                self._progress[pair] = Progress(
                    stage=event.stage.value,
                    message=event.message,
                    bytes_done=event.bytes_done,
                    bytes_total=event.bytes_total,
                )
                if event.stage is LoadStage.FAILED:
                    raise NodeError(event.message)
            self._failures.pop(pair, None)
            self._settling[pair] = (True, self._clock())
            logger.info("%s is ready on %s", spec.name, node.name)
        except NodeError as exc:
            self._failed(pair, str(exc))
        finally:
            self._loading.discard(pair)
            await client.close()
            self._wake.set()

    def _failed(self, pair: Pair, reason: str) -> None:
        before = self._failures.get(pair)
        count = before.count + 1 if before else 1
        self._failures[pair] = Failure(count=count, last_at=self._clock(), reason=reason)
        self._progress[pair] = Progress(stage="failed", message=reason)
        logger.warning("loading %s on %s failed (%d in a row): %s", pair[1], pair[0], count, reason)

    async def _unload(self, node: NodeView, model: ModelName) -> None:
        pair = (node.node_id, model)
        logger.info("unloading %s from %s", model, node.name)
        client = self._client_factory(node.address)
        try:
            await client.unload_model(model)
            self._settling[pair] = (False, self._clock())
            self._progress.pop(pair, None)
        except NodeError as exc:
            logger.warning("unloading %s from %s failed: %s", model, node.name, exc)
        finally:
            self._unloading.discard(pair)
            await client.close()
            self._wake.set()

    # -- what the planners see -------------------------------------------------------------

    def _loaded(self, node_id: NodeId, now: float) -> set[ModelName]:
        """Loaded models on a node; a load's or unload's own answer wins for a moment."""
        loaded = set(self._facts.get(node_id, ModelFacts()).loaded)
        for (n, model), (is_loaded, since) in list(self._settling.items()):
            if now - since > SETTLE_S:
                del self._settling[(n, model)]
            elif n == node_id:
                (loaded.add if is_loaded else loaded.discard)(model)
        return loaded

    def _slots(self, table: NodeTable, now: float) -> list[NodeSlot]:
        """The nodes placement may consider: those that answer."""
        return facts.slots(
            table, self._facts, lambda n: self._loaded(n, now), self.specs, self.cordons
        )

    def _observed(self, table: NodeTable, now: float) -> reconcile.Observed:
        nodes = facts.observed_nodes(table, self._facts, lambda n: self._loaded(n, now))
        return reconcile.Observed(
            now=now,
            nodes=nodes,
            loading=frozenset(self._loading),
            unloading=frozenset(self._unloading),
            withdrawn=dict(self._withdrawn),
            failures=dict(self._failures),
        )

    def _sizes(self) -> dict[ModelName, ModelSize | None]:
        """Each spec's model sizes: from a node that has it on disk, else from this machine."""
        return facts.sizes(self.specs.values(), self._facts, self._local_sizes)

    async def _size_locally(self, spec: DeploymentSpec) -> None:
        """Size a model directory on the controller's machine, once (files are read here)."""
        if spec.model in self._local_sizes:
            return
        from node_agent import demo_model, models

        def read() -> ModelSize | None:
            path = Path(spec.model).expanduser()
            if spec.model == demo_model.DEMO_NAME and self._data_dir is not None:
                path = demo_model.demo_model_path(self._data_dir)
            if not (path / "config.json").is_file():
                return None
            try:
                return model_size(models.disk_model(spec.model, path))
            except Exception as exc:  # an unreadable directory is "size unknown", with a log
                logger.warning("cannot size %s: %s", spec.model, exc)
                return None

        self._local_sizes[spec.model] = await asyncio.to_thread(read)

    def _restore_withdrawn(self, table: NodeTable) -> None:
        """Route to a withdrawn replica again once it is unloaded or assigned there again."""
        for pair, _ in list(self._withdrawn.items()):
            node_id, model = pair
            gone = model not in self._facts.get(node_id, ModelFacts()).loaded
            back = node_id in self.assignments.get(model, ())
            if pair not in self._unloading and (gone or back or model not in self.specs):
                del self._withdrawn[pair]
                self._withdraw_fn(node_id, model, False)

    def _apply_drains(self, table: NodeTable) -> None:
        """A cordoned node stops taking requests once its managed replicas have moved away."""
        for node_id in self.cordons - self._drained:
            loaded = self._facts.get(node_id, ModelFacts()).loaded
            pending = [m for m in loaded if m in self.specs and (node_id, m) not in self._withdrawn]
            if not pending and table.get(node_id) is not None:
                self._drained.add(node_id)
                self._drain_fn(node_id, True)
