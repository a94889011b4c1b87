"""Deployments as the admin asks for them: deploy, undeploy, cordon, rebalance, and the report.

`Deployer` is the desired-state loop of `deploy_loop` plus these operations. Each one checks
the request, changes the desired state (a spec, the assignment, a cordon), stores it and wakes
the loop, which does the rest; none of them calls a node. A request that cannot be done is a
`DeployError`, and the JSON they answer with is built here from what the loop keeps.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from cluster.deployments import placement, rebalance, reconcile
from cluster.deployments.facts import ModelFacts
from cluster.deployments.loop import DeployLoop
from cluster.deployments.placement import DeploymentSpec, Placement
from cluster.deployments.reconcile import Pair
from cluster.types import ModelName, NodeId, NodeState, NodeTable, NodeView

ENGINES = ("", "mlx", "vllm")


class DeployError(Exception):
    """An admin request that cannot be done; `status` is the HTTP status to answer with."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


class Deployer(DeployLoop):
    """The loop, and the admin's operations on its desired state."""

    async def deploy(
        self, spec: DeploymentSpec, table: NodeTable, *, dry_run: bool = False
    ) -> dict[str, Any]:
        """Add or change a spec; the placement it gets (nothing changes on a dry run)."""
        _validate(spec)
        await self._size_locally(spec)
        now = self._clock()
        specs = {**self.specs, spec.name: spec}
        saved, self.specs = self.specs, specs
        try:
            preview = placement.place(
                list(specs.values()),
                self._sizes(),
                self._slots(table, now),
                self.assignments,
                self.settings.placement,
            )
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
        return {
            "model": spec.name,
            "spec": _spec_json(spec),
            "dry_run": dry_run,
            "placement": [
                self._replica_json(table, spec.name, n, preview, spec.model) for n in chosen
            ],
            "unplaced": [{"replica": u.replica, "reason": u.reason} for u in unplaced],
        }

    async def undeploy(self, name: ModelName) -> dict[str, Any]:
        """Unload every replica of a model and forget its spec once they are gone."""
        spec = self.specs.get(name)
        if spec is None:
            known = ", ".join(sorted(self.specs)) or "none"
            raise DeployError(f"no deployment named {name!r}; deployed: {known}", 404)
        self.specs[name] = replace(spec, replicas=0)
        await self.store.put_spec(self.specs[name], time.time())
        self._wake.set()
        return {"model": name, "undeployed": True}

    async def cordon(self, node_id: NodeId, cordoned: bool, table: NodeTable) -> None:
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

    async def rebalance(
        self,
        table: NodeTable,
        demand: Mapping[ModelName, float],
        tps: Mapping[NodeId, float],
        *,
        dry_run: bool,
    ) -> dict[str, Any]:
        """Move replicas toward demand; applying only changes the assignment (see reconcile)."""
        slots = [
            replace(s, tps=tps.get(s.node_id, s.tps)) for s in self._slots(table, self._clock())
        ]
        active = [s for s in self.specs.values() if s.replicas > 0]
        moves = rebalance.propose(
            active, self.assignments, self._sizes(), slots, demand, settings=self.settings.placement
        )
        if moves and not dry_run:
            assigned = {m: list(n) for m, n in self.assignments.items()}
            for move in moves:
                held = assigned[move.model]
                held[held.index(move.from_node)] = move.to_node
            self.assignments = {m: tuple(n) for m, n in assigned.items()}
            await self.store.put_assignments(self.assignments)
            self._wake.set()
        names = {s.node_id: s.name for s in slots}
        return {
            "dry_run": dry_run,
            "demand": dict(demand),
            "tps": {names.get(n, n): t for n, t in tps.items()},
            "moves": [
                {
                    "model": m.model,
                    "from": names.get(m.from_node, m.from_node),
                    "to": names.get(m.to_node, m.to_node),
                    "reason": m.reason,
                }
                for m in moves
            ],
        }

    def report(self, table: NodeTable) -> list[dict[str, Any]]:
        """Desired vs actual per deployed model, with each replica's progress."""
        out = []
        for name, spec in sorted(self.specs.items()):
            nodes = set(self.assignments.get(name, ()))
            nodes |= {n for n, f in self._facts.items() if name in f.loaded}
            replicas = [self._replica_json(table, name, n, self.placement) for n in sorted(nodes)]
            out.append(
                {
                    "model": name,
                    "spec": _spec_json(spec),
                    "desired": spec.replicas,
                    "ready": sum(r["state"] == "ready" for r in replicas),
                    "replicas": replicas,
                    "crash_loops": [
                        {"node": _name(table, n), "failures": f.count, "reason": f.reason}
                        for (n, m), f in sorted(self._failures.items())
                        if m == name and reconcile.crash_looped(f, self.settings.reconcile)
                    ],
                    "unplaced": [
                        {"replica": u.replica, "reason": u.reason}
                        for u in self.placement.unplaced
                        if u.model == name
                    ],
                }
            )
        return out

    def _replica_json(
        self,
        table: NodeTable,
        model: ModelName,
        node_id: NodeId,
        plan: Placement,
        source: str = "",  # the model reference; "" for the deployed spec's
    ) -> dict[str, Any]:
        pair = (node_id, model)
        source = source or (self.specs[model].model if model in self.specs else "")
        view = table.get(node_id)
        progress = self._progress.get(pair)
        failure = self._failures.get(pair)
        return {
            "node": view.name if view else node_id,
            "node_id": node_id,
            "state": self._state(pair, view),
            "estimate_bytes": plan.estimates.get(model, 0),
            "on_disk": source in self._facts.get(node_id, ModelFacts()).disk,
            "stage": progress.stage if progress else "",
            "message": progress.message if progress else "",
            "bytes_done": progress.bytes_done if progress else 0,
            "bytes_total": progress.bytes_total if progress else 0,
            "failures": failure.count if failure else 0,
            "reason": failure.reason if failure else "",
        }

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


def _name(table: NodeTable, node_id: NodeId) -> str:
    view = table.get(node_id)
    return view.name if view else node_id


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
    return {
        "name": spec.name,
        "model": spec.model,
        "engine": spec.engine or "any",
        "replicas": spec.replicas,
        "nodes": list(spec.nodes),
        "context_length": spec.context_length,
        "concurrency": spec.concurrency,
        "tool_parser": spec.tool_parser,
    }
