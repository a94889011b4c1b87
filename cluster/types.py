"""Domain records of the control plane. Protobuf never gets past node_client.py."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import NewType

# One cost profile, from the agent's flags to the ledger; one protocol version, the agent's.
from node_agent.types import PROTOCOL_VERSION as PROTOCOL_VERSION
from node_agent.types import CostProfile as CostProfile

NodeId = NewType("NodeId", str)
ModelName = NewType("ModelName", str)


class NodeState(Enum):
    """A node's state, derived from what the controller observes, never set by hand."""

    JOINING = "joining"  # seen (mDNS or --peer), not yet described and streaming status
    READY = "ready"  # status stream alive
    DRAINING = "draining"  # alive, takes no new requests (admin asked)
    LOST = "lost"  # status stream broken for longer than the grace period
    REJECTED = "rejected"  # answered, but could not prove it holds the cluster secret
    INCOMPATIBLE = "incompatible"  # speaks another major version of the agent protocol


def protocol_compatible(version: str) -> bool:
    """Whether an agent of protocol `version` speaks this head's major ("": it did not say)."""
    return not version or version.split(".")[0] == PROTOCOL_VERSION.split(".")[0]


@dataclass(frozen=True, kw_only=True)
class ModelTraits:
    """What a node says of one model it serves: its capabilities, context and engine."""

    capabilities: frozenset[str] = frozenset()  # node_agent.types TOOLS, CONSTRAINTS, ...
    context_length: int = 0  # 0: not said (an older agent)
    engine: str = ""


_NO_TRAITS = ModelTraits()


@dataclass(frozen=True, kw_only=True)
class NodeView:
    """One node as the gateway sees it in a snapshot: enough to route, nothing to mutate."""

    node_id: NodeId
    name: str
    address: str  # host:port that answered
    engines: tuple[str, ...]
    state: NodeState
    models: tuple[ModelName, ...]
    memory_total_bytes: int = 0
    memory_used_bytes: int = 0
    running: int = 0  # requests running on the node, as it reported
    waiting: int = 0
    decode_tps: float = 0.0  # measured aggregate decode tokens/s (rolling window)
    tps_measured: bool = False  # False: decode_tps is the conservative starting estimate
    accelerator: str = ""
    cost: CostProfile = field(default_factory=CostProfile)
    reason: str = ""  # why the node is rejected or incompatible; empty otherwise
    agent_version: str = ""  # as its Describe said ("": not described yet)
    protocol_version: str = ""
    plaintext: bool = False  # reached without TLS (only where the admin allowed it)
    # What each model can serve beyond plain text (node_agent.types TOOLS, CONSTRAINTS, ...);
    # a model absent here serves plain requests only.
    traits: tuple[tuple[ModelName, ModelTraits], ...] = ()  # sorted by model

    def model_traits(self, model: ModelName) -> ModelTraits:
        """What the node says of its `model` (empty traits from agents that say nothing)."""
        return next((t for m, t in self.traits if m == model), _NO_TRAITS)

    def model_capabilities(self, model: ModelName) -> frozenset[str]:
        """What the node's `model` can serve beyond plain text."""
        return self.model_traits(model).capabilities

    def can_serve(self, model: ModelName, needs: frozenset[str]) -> bool:
        """Whether the node's `model` has every capability in `needs`."""
        return not needs or needs <= self.model_capabilities(model)

    @property
    def routable(self) -> bool:
        """Ready and not draining."""
        return self.state is NodeState.READY


@dataclass(frozen=True)
class ModelAlias:
    """Another name for a served model: `name` is exact or an fnmatch glob (`gpt-*`)."""

    name: str
    target: ModelName


@dataclass(frozen=True, kw_only=True)
class NodeTable:
    """A versioned snapshot of every known node, and the model aliases; pushed from the
    controller to gateways."""

    version: int = 0
    nodes: tuple[NodeView, ...] = ()
    aliases: tuple[ModelAlias, ...] = ()  # in resolution order (cluster/deployments/aliases.py)

    def get(self, node_id: NodeId) -> NodeView | None:
        """The node with this id, if known."""
        return next((n for n in self.nodes if n.node_id == node_id), None)

    def models(self) -> list[ModelName]:
        """Every model at least one routable node serves, sorted."""
        return sorted({m for n in self.nodes if n.routable for m in n.models})
