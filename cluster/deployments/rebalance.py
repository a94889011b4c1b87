"""Rebalance: move replicas toward where demand is. Pure: facts in, moves out.

Demand is tokens per model over a recent window (from the ledger); speed is each node's
measured decode tokens/s. For each model with demand, busiest first, its replica on the slowest
node moves to the fastest eligible node that lacks it, if that node is faster by `min_gain`.
When the fastest node has no room, replicas of idle models (no demand in the window) on it are
moved to the slowest node with room first: idle models give the fast memory back.

The moves only change the assignment; reconcile then loads each new replica first and retires
the old one once the new serves, so applying a rebalance drops no request.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from cluster.deployments.placement import (
    DeploymentSpec,
    ModelSize,
    NodeSlot,
    PlacementSettings,
    budget,
    estimate,
    overhead_for,
)
from cluster.types import ModelName, NodeId


@dataclass(frozen=True, kw_only=True)
class Move:
    """Move one replica of `model` from one node to another, and why."""

    model: ModelName
    from_node: NodeId
    to_node: NodeId
    reason: str


def propose(
    specs: Sequence[DeploymentSpec],
    assignments: Mapping[ModelName, Sequence[NodeId]],
    sizes: Mapping[ModelName, ModelSize | None],
    nodes: Sequence[NodeSlot],
    demand: Mapping[ModelName, float],
    *,
    settings: PlacementSettings | None = None,
    min_gain: float = 0.2,
) -> list[Move]:
    """The moves that put the busiest models on the fastest nodes; [] when nothing gains."""
    settings = settings or PlacementSettings()
    state = _State(specs, {m: list(n) for m, n in assignments.items()}, sizes, nodes, settings)
    moves: list[Move] = []
    busy = sorted(
        (
            s
            for s in specs
            if s.replicas > 0 and not s.nodes and demand.get(s.name, 0) > 0 and sizes.get(s.name)
        ),
        key=lambda s: (-demand.get(s.name, 0), s.name),
    )
    idle = [
        s
        for s in specs
        if s.replicas > 0 and not s.nodes and not demand.get(s.name, 0) and sizes.get(s.name)
    ]
    for spec in busy:
        held = [n for i in state.assigned.get(spec.name, ()) if (n := state.node(i))]
        if not held:
            continue
        slowest = min(held, key=lambda n: (n.tps, n.name))
        targets = [
            n
            for n in nodes
            if n.available
            and n.node_id not in state.assigned[spec.name]
            and (not spec.engine or spec.engine in n.engines)
        ]
        for target in sorted(targets, key=lambda n: (-n.tps, n.name)):
            if target.tps < slowest.tps * (1 + min_gain):
                break
            if not state.fits(spec, target):
                moves += state.evict_idle(idle, target, spec)
            if state.fits(spec, target):
                moves.append(
                    state.move(
                        spec,
                        slowest,
                        target,
                        (
                            f"{demand[spec.name]:.0f} tokens of demand; {target.name} decodes "
                            f"{target.tps:.1f} tok/s, {slowest.name} {slowest.tps:.1f}"
                        ),
                    )
                )
                break
    return moves


class _State:
    """The assignment as moves change it, with each node's memory in use."""

    def __init__(
        self,
        specs: Sequence[DeploymentSpec],
        assigned: dict[ModelName, list[NodeId]],
        sizes: Mapping[ModelName, ModelSize | None],
        nodes: Sequence[NodeSlot],
        settings: PlacementSettings,
    ) -> None:
        self.assigned, self._settings = assigned, settings
        self._nodes = {n.node_id: n for n in nodes}
        self._need = {
            (s.name, n.node_id): estimate(s, size, overhead_for(s, n, settings))
            for s in specs
            if (size := sizes.get(s.name))
            for n in nodes
        }
        self.used = {
            n.node_id: sum(
                self._need.get((m, n.node_id), 0)
                for m, held in assigned.items()
                if n.node_id in held
            )
            for n in nodes
        }

    def node(self, node_id: NodeId) -> NodeSlot | None:
        """The node with this id, if known."""
        return self._nodes.get(node_id)

    def fits(self, spec: DeploymentSpec, node: NodeSlot) -> bool:
        """Whether one more replica of the spec fits the node's budget."""
        need = self._need[(spec.name, node.node_id)]
        return self.used[node.node_id] + need <= budget(node, self._settings)

    def move(self, spec: DeploymentSpec, src: NodeSlot, dst: NodeSlot, reason: str) -> Move:
        """Record one move and its memory."""
        held = self.assigned[spec.name]
        held[held.index(src.node_id)] = dst.node_id
        self.used[src.node_id] -= self._need[(spec.name, src.node_id)]
        self.used[dst.node_id] += self._need[(spec.name, dst.node_id)]
        return Move(model=spec.name, from_node=src.node_id, to_node=dst.node_id, reason=reason)

    def evict_idle(
        self, idle: Sequence[DeploymentSpec], node: NodeSlot, wanted: DeploymentSpec
    ) -> list[Move]:
        """Move idle replicas off `node` to the slowest nodes with room, until `wanted` fits."""
        moves = []
        for spec in idle:
            if self.fits(wanted, node):
                break
            if node.node_id not in self.assigned.get(spec.name, ()):
                continue
            homes = sorted(
                (
                    n
                    for n in self._nodes.values()
                    if n.available
                    and n.node_id not in self.assigned[spec.name]
                    and (not spec.engine or spec.engine in n.engines)
                    and self.fits(spec, n)
                ),
                key=lambda n: (n.tps, n.name),
            )
            if homes:
                moves.append(
                    self.move(
                        spec,
                        node,
                        homes[0],
                        (f"no demand; gives {node.name}'s memory to {wanted.name}"),
                    )
                )
        return moves


def demand_by_model(rows: Sequence[Mapping[str, Any]]) -> dict[ModelName, float]:
    """Tokens generated per model, from the ledger's usage rows grouped by model."""
    return {ModelName(str(r["model"])): float(r.get("completion_tokens") or 0) for r in rows}


def tps_by_node(rows: Sequence[Mapping[str, Any]]) -> dict[NodeId, float]:
    """Each node's measured decode rate, from the ledger's usage rows grouped by node.

    Tokens per second of request time: what one request meets there, comparable across nodes.
    """
    out: dict[NodeId, float] = {}
    for r in rows:
        seconds = float(r.get("mean_duration_s") or 0) * int(r.get("requests") or 0)
        if r.get("node") and seconds > 0:
            out[NodeId(str(r["node"]))] = float(r.get("completion_tokens") or 0) / seconds
    return out
