"""The desired-state loop: specs + node facts -> placement -> reconcile plan -> node calls.

Each tick derives everything again from what is stored (specs, the last placement, cordons)
and what nodes last said (Describe, status); the pure `placement.place` and `reconcile.plan`
decide, and this module only carries the actions out: LoadModel streams (their progress kept
for the admin), UnloadModel calls, and routing withdrawals through the controller's inventory.
A step that fails is logged and the loop goes on; it never exits.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from cluster import placement, rebalance, reconcile
from cluster.deploy_store import DeployStore
from cluster.node_client import NodeClient, NodeDescription, NodeError, NodeStatusSample
from cluster.placement import DeploymentSpec, ModelSize, NodeSlot, Placement
from cluster.reconcile import Failure, Load, ObservedNode, Unload, Withdraw
from cluster.types import NodeState, NodeTable, NodeView
from node_agent.types import DiskModel, LoadStage

logger = logging.getLogger(__name__)

Pair = tuple[str, str]
ENGINES = ("", "mlx", "vllm")
SETTLE_S = 3.0  # how long a load's or unload's own answer beats a status that predates it


class DeployError(Exception):
    """An admin request that cannot be done; `status` is the HTTP status to answer with."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True, kw_only=True)
class DeployerSettings:
    """Knobs of the loop."""

    tick_s: float = 0.5
    placement: placement.PlacementSettings = field(
        default_factory=placement.PlacementSettings)
    reconcile: reconcile.ReconcileSettings = field(default_factory=reconcile.ReconcileSettings)


@dataclass
class _Facts:
    """What one node last said about its models."""

    address: str = ""
    disk: dict[str, DiskModel] = field(default_factory=dict)  # source -> sizes
    loaded: dict[str, int] = field(default_factory=dict)  # served name -> memory bytes
    busy: dict[str, int] = field(default_factory=dict)  # served name -> running + waiting


@dataclass
class _Progress:
    """The last LoadModel event for one (node, model)."""

    stage: str
    message: str = ""
    bytes_done: int = 0
    bytes_total: int = 0


class Deployer:
    """Owns the desired state and the loop that makes it so."""

    def __init__(
        self,
        store: DeployStore,
        *,
        client_factory: Callable[[str], NodeClient] = NodeClient,
        clock: Callable[[], float] = time.monotonic,
        withdraw: Callable[[str, str, bool], None] = lambda node, model, on: None,
        drain: Callable[[str, bool], None] = lambda node, on: None,
        settings: DeployerSettings | None = None,
        data_dir: Path | None = None,
    ) -> None:
        self.store = store
        self._data_dir = data_dir  # where this machine keeps models (the demo model, say)
        self.settings = settings or DeployerSettings()
        self._client_factory, self._clock = client_factory, clock
        self._withdraw_fn, self._drain_fn = withdraw, drain
        self.specs: dict[str, DeploymentSpec] = {}
        self.assignments: dict[str, tuple[str, ...]] = {}
        self.cordons: set[str] = set()
        self.placement = Placement(assignments={})
        self._facts: dict[str, _Facts] = {}
        self._local_sizes: dict[str, ModelSize | None] = {}
        self._progress: dict[Pair, _Progress] = {}
        self._failures: dict[Pair, Failure] = {}
        self._loading: set[Pair] = set()
        self._unloading: set[Pair] = set()
        self._settling: dict[Pair, tuple[bool, float]] = {}  # pair -> (loaded?, since)
        self._withdrawn: dict[Pair, float] = {}
        self._drained: set[str] = set()
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
        facts = self._facts.setdefault(desc.node_id, _Facts())
        facts.address = address
        facts.disk = {d.source: d for d in desc.disk_models}
        facts.loaded = {m.name: m.memory_bytes for m in desc.models}

    def status(self, sample: NodeStatusSample, address: str) -> None:
        """A node's status: what is loaded and busy now."""
        facts = self._facts.setdefault(sample.node_id, _Facts(address=address))
        facts.address = address
        facts.loaded = {m.model: m.memory_bytes for m in sample.models}
        facts.busy = {m.model: m.running + m.waiting for m in sample.models}

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
        avoid = frozenset(p for p, f in self._failures.items()
                          if reconcile.crash_looped(f, self.settings.reconcile))
        self.placement = placement.place(list(self.specs.values()), self._sizes(),
                                         slots, self.assignments,
                                         self.settings.placement, avoid)
        wanted = {m: n for m, n in self.placement.assignments.items()}
        if wanted != self.assignments:
            logger.info("placement: %s", wanted)
            self.assignments = wanted
            await self.store.put_assignments(wanted)
        self._restore_withdrawn(table)
        observed = self._observed(table, now)
        actions = reconcile.plan(list(self.specs.values()), self.assignments, observed,
                                 self.settings.reconcile)
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
        node = table.get(action.node_id)  # type: ignore[arg-type]
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
        self._progress[pair] = _Progress(stage="starting", message=f"asking {node.name}")
        logger.info("loading %s (%s) on %s", spec.name, spec.model, node.name)
        client = self._client_factory(node.address)
        try:
            async for event in client.load_model(spec.model, name=spec.name, engine=spec.engine,
                                                 context_length=spec.context_length):
                self._progress[pair] = _Progress(stage=event.stage.value, message=event.message,
                                                 bytes_done=event.bytes_done,
                                                 bytes_total=event.bytes_total)
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
        self._progress[pair] = _Progress(stage="failed", message=reason)
        logger.warning("loading %s on %s failed (%d in a row): %s", pair[1], pair[0], count,
                       reason)

    async def _unload(self, node: NodeView, model: str) -> None:
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

    def _loaded(self, node_id: str, now: float) -> set[str]:
        """Loaded models on a node; a load's or unload's own answer wins for a moment."""
        loaded = set(self._facts.get(node_id, _Facts()).loaded)
        for (n, model), (is_loaded, since) in list(self._settling.items()):
            if now - since > SETTLE_S:
                del self._settling[(n, model)]
            elif n == node_id:
                (loaded.add if is_loaded else loaded.discard)(model)
        return loaded

    def _slots(self, table: NodeTable, now: float) -> list[NodeSlot]:
        """The nodes placement may consider: those that answer."""
        slots = []
        for view in table.nodes:
            if view.state not in (NodeState.READY, NodeState.DRAINING):
                continue
            facts = self._facts.get(view.node_id, _Facts())
            loaded = self._loaded(view.node_id, now)
            other = sum(b for m, b in facts.loaded.items() if m not in self.specs)
            slots.append(NodeSlot(
                node_id=view.node_id, name=view.name, engines=view.engines,
                memory_total_bytes=view.memory_total_bytes,
                available=view.state is NodeState.READY and view.node_id not in self.cordons,
                on_disk=frozenset(facts.disk), loaded=frozenset(loaded), other_bytes=other,
                tps=view.decode_tps))
        return slots

    def _observed(self, table: NodeTable, now: float) -> reconcile.Observed:
        nodes: dict[str, ObservedNode] = {
            v.node_id: ObservedNode(
                node_id=v.node_id,
                reachable=v.state in (NodeState.READY, NodeState.DRAINING),
                loaded=frozenset(self._loaded(v.node_id, now)),
                serving=frozenset(v.models) if v.routable else frozenset(),
                busy=dict(self._facts.get(v.node_id, _Facts()).busy))
            for v in table.nodes}
        return reconcile.Observed(
            now=now, nodes=nodes, loading=frozenset(self._loading),
            unloading=frozenset(self._unloading), withdrawn=dict(self._withdrawn),
            failures=dict(self._failures))

    def _sizes(self) -> dict[str, ModelSize | None]:
        """Each spec's model sizes: from a node that has it on disk, else from this machine."""
        out: dict[str, ModelSize | None] = {}
        for spec in self.specs.values():
            disk = next((f.disk[spec.model] for f in self._facts.values()
                         if spec.model in f.disk), None)
            out[spec.name] = (_size(disk) if disk else self._local_sizes.get(spec.model))
        return out

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
                return _size(models.disk_model(spec.model, path))
            except Exception as exc:  # an unreadable directory is "size unknown", with a log
                logger.warning("cannot size %s: %s", spec.model, exc)
                return None

        self._local_sizes[spec.model] = await asyncio.to_thread(read)

    def _restore_withdrawn(self, table: NodeTable) -> None:
        """Route to a withdrawn replica again once it is unloaded or assigned there again."""
        for pair, _ in list(self._withdrawn.items()):
            node_id, model = pair
            gone = model not in self._facts.get(node_id, _Facts()).loaded
            back = node_id in self.assignments.get(model, ())
            if pair not in self._unloading and (gone or back or model not in self.specs):
                del self._withdrawn[pair]
                self._withdraw_fn(node_id, model, False)

    def _apply_drains(self, table: NodeTable) -> None:
        """A cordoned node stops taking requests once its managed replicas have moved away."""
        for node_id in self.cordons - self._drained:
            loaded = self._facts.get(node_id, _Facts()).loaded
            pending = [m for m in loaded if m in self.specs and (node_id, m) not in self._withdrawn]
            if not pending and table.get(node_id) is not None:  # type: ignore[arg-type]
                self._drained.add(node_id)
                self._drain_fn(node_id, True)

    # -- admin -----------------------------------------------------------------------------

    async def deploy(self, spec: DeploymentSpec, table: NodeTable, *,
                     dry_run: bool = False) -> dict[str, Any]:
        """Add or change a spec; the placement it gets (nothing changes on a dry run)."""
        _validate(spec)
        await self._size_locally(spec)
        now = self._clock()
        specs = {**self.specs, spec.name: spec}
        saved, self.specs = self.specs, specs
        try:
            preview = placement.place(list(specs.values()), self._sizes(), self._slots(table, now),
                                      self.assignments, self.settings.placement)
        finally:
            self.specs = saved
        chosen = preview.assignments.get(spec.name, ())
        unplaced = [u for u in preview.unplaced if u.model == spec.name]
        if not chosen and unplaced:
            raise DeployError(f"cannot place {spec.name}: {unplaced[0].reason}")
        if not dry_run:
            self.specs = specs
            for pair in [p for p in self._failures if p[1] == spec.name]:
                del self._failures[pair]  # a new deploy is a new chance after a crash loop
            await self.store.put_spec(spec, time.time())
            self._wake.set()
        return {"model": spec.name, "spec": _spec_json(spec), "dry_run": dry_run,
                "placement": [self._replica_json(table, spec.name, n, preview, spec.model)
                              for n in chosen],
                "unplaced": [{"replica": u.replica, "reason": u.reason} for u in unplaced]}

    async def undeploy(self, name: str) -> dict[str, Any]:
        """Unload every replica of a model and forget its spec once they are gone."""
        spec = self.specs.get(name)
        if spec is None:
            known = ", ".join(sorted(self.specs)) or "none"
            raise DeployError(f"no deployment named {name!r}; deployed: {known}", 404)
        self.specs[name] = replace(spec, replicas=0)
        await self.store.put_spec(self.specs[name], time.time())
        self._wake.set()
        return {"model": name, "undeployed": True}

    async def cordon(self, node_id: str, cordoned: bool, table: NodeTable) -> None:
        """Drain (place its replicas elsewhere, then stop routing) or uncordon a node."""
        await self.store.set_cordon(node_id, cordoned)
        if cordoned:
            self.cordons.add(node_id)
            self._apply_drains(table)  # a node with nothing to move drains at once
        else:
            self.cordons.discard(node_id)
            self._drained.discard(node_id)
            self._drain_fn(node_id, False)
        self._wake.set()

    async def rebalance(self, table: NodeTable, demand: Mapping[str, float],
                        tps: Mapping[str, float], *, dry_run: bool) -> dict[str, Any]:
        """Move replicas toward demand; applying only changes the assignment (see reconcile)."""
        slots = [replace(s, tps=tps.get(s.node_id, s.tps))
                 for s in self._slots(table, self._clock())]
        active = [s for s in self.specs.values() if s.replicas > 0]
        moves = rebalance.propose(active, self.assignments, self._sizes(), slots, demand,
                                  settings=self.settings.placement)
        if moves and not dry_run:
            assigned = {m: list(n) for m, n in self.assignments.items()}
            for move in moves:
                held = assigned[move.model]
                held[held.index(move.from_node)] = move.to_node
            self.assignments = {m: tuple(n) for m, n in assigned.items()}
            await self.store.put_assignments(self.assignments)
            self._wake.set()
        names = {s.node_id: s.name for s in slots}
        return {"dry_run": dry_run, "demand": dict(demand),
                "tps": {names.get(n, n): t for n, t in tps.items()},
                "moves": [{"model": m.model, "from": names.get(m.from_node, m.from_node),
                           "to": names.get(m.to_node, m.to_node), "reason": m.reason}
                          for m in moves]}

    def report(self, table: NodeTable) -> list[dict[str, Any]]:
        """Desired vs actual per deployed model, with each replica's progress."""
        out = []
        for name, spec in sorted(self.specs.items()):
            nodes = set(self.assignments.get(name, ()))
            nodes |= {n for n, f in self._facts.items() if name in f.loaded}
            replicas = [self._replica_json(table, name, n, self.placement) for n in sorted(nodes)]
            out.append({"model": name, "spec": _spec_json(spec), "desired": spec.replicas,
                        "ready": sum(r["state"] == "ready" for r in replicas),
                        "replicas": replicas,
                        "crash_loops": [
                            {"node": _name(table, n), "failures": f.count, "reason": f.reason}
                            for (n, m), f in sorted(self._failures.items())
                            if m == name and reconcile.crash_looped(f, self.settings.reconcile)],
                        "unplaced": [{"replica": u.replica, "reason": u.reason}
                                     for u in self.placement.unplaced if u.model == name]})
        return out

    def _replica_json(self, table: NodeTable, model: str, node_id: str, plan: Placement,
                      source: str = "") -> dict[str, Any]:
        pair = (node_id, model)
        source = source or (self.specs[model].model if model in self.specs else "")
        view = table.get(node_id)  # type: ignore[arg-type]
        progress = self._progress.get(pair)
        failure = self._failures.get(pair)
        return {"node": view.name if view else node_id, "node_id": node_id,
                "state": self._state(pair, view), "estimate_bytes": plan.estimates.get(model, 0),
                "on_disk": source in self._facts.get(node_id, _Facts()).disk,
                "stage": progress.stage if progress else "",
                "message": progress.message if progress else "",
                "bytes_done": progress.bytes_done if progress else 0,
                "bytes_total": progress.bytes_total if progress else 0,
                "failures": failure.count if failure else 0,
                "reason": failure.reason if failure else ""}

    def _state(self, pair: Pair, view: NodeView | None) -> str:
        """One word for a replica: loading, ready, withdrawn, unloading, failed, crash-loop..."""
        node_id, model = pair
        failure = self._failures.get(pair)
        if reconcile.crash_looped(failure, self.settings.reconcile):
            return "crash-loop"
        if view is None or view.state not in (NodeState.READY, NodeState.DRAINING):
            return "node " + (view.state.value if view else "unknown")  # what it said is stale
        if pair in self._loading:
            return "loading"
        if pair in self._unloading:
            return "unloading"
        if pair in self._withdrawn:
            return "withdrawn"
        if model in self._loaded(node_id, self._clock()):
            return "ready"
        return "failed" if failure else "pending"


def _name(table: NodeTable, node_id: str) -> str:
    view = table.get(node_id)  # type: ignore[arg-type]
    return view.name if view else node_id


def _size(disk: DiskModel) -> ModelSize:
    return ModelSize(weights_bytes=disk.weights_bytes, kv_bytes_per_token=disk.kv_bytes_per_token,
                     context_length=disk.context_length)


def _validate(spec: DeploymentSpec) -> None:
    """One readable line for a spec that makes no sense."""
    if not spec.name or not spec.model:
        raise DeployError("a deployment needs a model")
    if spec.engine not in ENGINES:
        raise DeployError(f"unknown engine {spec.engine!r}; engines are mlx, vllm")
    if spec.replicas < 1:
        raise DeployError(f"replicas must be at least 1, got {spec.replicas}")
    if spec.context_length < 0 or spec.concurrency < 1:
        raise DeployError("context must be >= 0 and concurrency >= 1")


def _spec_json(spec: DeploymentSpec) -> dict[str, Any]:
    return {"name": spec.name, "model": spec.model, "engine": spec.engine or "any",
            "replicas": spec.replicas, "nodes": list(spec.nodes),
            "context_length": spec.context_length, "concurrency": spec.concurrency}
