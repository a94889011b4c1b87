"""What nodes last said about their models, and what the planners are shown of it.

The loop keeps a `ModelFacts` per node from its Describe answers and status samples, and a
`Progress` per (node, model) from LoadModel streams. The functions here are pure: from the
node table, those facts and what each node holds right now, they build the slots and model
sizes `placement.place` takes and the observed nodes `reconcile.plan` takes, so what the
planners see can be read and tested apart from the loop that acts on it.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, field

from cluster.deployments.placement import DeploymentSpec, ModelSize, NodeSlot
from cluster.deployments.reconcile import ObservedNode
from cluster.types import ModelName, NodeId, NodeState, NodeTable
from node_agent.types import DiskModel


@dataclass
class ModelFacts:
    """What one node last said about its models."""

    address: str = ""
    disk: dict[str, DiskModel] = field(default_factory=dict)  # source (model reference) -> sizes
    loaded: dict[ModelName, int] = field(default_factory=dict)  # served name -> memory bytes
    busy: dict[ModelName, int] = field(default_factory=dict)  # served name -> running + waiting


@dataclass
class Progress:
    """The last LoadModel event for one (node, model)."""

    stage: str
    message: str = ""
    bytes_done: int = 0
    bytes_total: int = 0


def slots(
    table: NodeTable,
    facts: Mapping[NodeId, ModelFacts],
    loaded: Callable[[NodeId], Collection[ModelName]],
    managed: Collection[ModelName],
    cordons: Collection[NodeId],
) -> list[NodeSlot]:
    """The nodes placement may consider: those that answer.

    `loaded` is what a node holds now; memory held by models outside `managed` (the deployed
    names) counts against a node, and a cordoned node takes no new replicas.
    """
    out = []
    for view in table.nodes:
        if view.state not in (NodeState.READY, NodeState.DRAINING):
            continue
        node = facts.get(view.node_id, ModelFacts())
        held = loaded(view.node_id)
        other = sum(b for m, b in node.loaded.items() if m not in managed)
        out.append(
            NodeSlot(
                node_id=view.node_id,
                name=view.name,
                engines=view.engines,
                memory_total_bytes=view.memory_total_bytes,
                available=view.state is NodeState.READY and view.node_id not in cordons,
                on_disk=frozenset(node.disk),
                loaded=frozenset(held),
                other_bytes=other,
                tps=view.decode_tps,
            )
        )
    return out


def observed_nodes(
    table: NodeTable,
    facts: Mapping[NodeId, ModelFacts],
    loaded: Callable[[NodeId], Collection[ModelName]],
) -> dict[NodeId, ObservedNode]:
    """Every node as reconcile sees it: reachable, what it holds, serves and is busy with."""
    return {
        v.node_id: ObservedNode(
            node_id=v.node_id,
            reachable=v.state in (NodeState.READY, NodeState.DRAINING),
            loaded=frozenset(loaded(v.node_id)),
            serving=frozenset(v.models) if v.routable else frozenset(),
            busy=dict(facts.get(v.node_id, ModelFacts()).busy),
        )
        for v in table.nodes
    }


def sizes(
    specs: Iterable[DeploymentSpec],
    facts: Mapping[NodeId, ModelFacts],
    local: Mapping[str, ModelSize | None],  # by model reference (a path, a hub id)
) -> dict[ModelName, ModelSize | None]:
    """Each spec's model sizes: from a node that has it on disk, else from this machine."""
    out: dict[ModelName, ModelSize | None] = {}
    for spec in specs:
        disk = next((f.disk[spec.model] for f in facts.values() if spec.model in f.disk), None)
        out[spec.name] = model_size(disk) if disk else local.get(spec.model)
    return out


def model_size(disk: DiskModel) -> ModelSize:
    """The sizes placement needs, from a model directory's description."""
    return ModelSize(
        weights_bytes=disk.weights_bytes,
        kv_bytes_per_token=disk.kv_bytes_per_token,
        context_length=disk.context_length,
    )
