"""Node state, derived: observations in, a versioned NodeTable out.

The controller feeds observations (facts, past tense) as they happen; nothing here reads a clock
or does I/O. A node's state is derived from those facts and the `now` passed to `table`, never
stored and then forgotten: a node whose status stream broke is LOST once the grace period has
passed, or at once if reconnecting then failed, and READY again as soon as a status arrives,
without anyone acting.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING

from cluster.throughput import INITIAL_TPS, ThroughputWindow
from cluster.types import (
    PROTOCOL_VERSION,
    CostProfile,
    ModelAlias,
    ModelName,
    ModelTraits,
    NodeId,
    NodeState,
    NodeTable,
    NodeView,
    protocol_compatible,
)

if TYPE_CHECKING:  # only for the converters' annotations: node_client pulls in gRPC
    from cluster.node_client import NodeDescription, NodeStatusSample


@dataclass(frozen=True, kw_only=True)
class NodeSeen:
    """Discovery found the node at `address` (over mDNS, or as a static --peer)."""

    node_id: NodeId
    address: str
    via: str  # "mdns" or "peer"
    at: float
    plaintext: bool = False  # reached without TLS (the admin allowed plaintext agents)


@dataclass(frozen=True, kw_only=True)
class NodeRefused:
    """The node at `address` answered but failed authentication; it must get no requests."""

    node_id: NodeId
    address: str
    reason: str
    at: float
    name: str = ""


@dataclass(frozen=True, kw_only=True)
class NodeDescribed:
    """The node said who it is, and which versions of the agent and its protocol it runs."""

    node_id: NodeId
    name: str
    agent_version: str = ""
    protocol_version: str = ""  # "": not said (taken as this head's)
    engines: tuple[str, ...] = ()
    accelerator: str = ""
    memory_total_bytes: int = 0
    cost: CostProfile = field(default_factory=CostProfile)
    at: float

    @classmethod
    def from_description(cls, desc: NodeDescription, *, at: float) -> NodeDescribed:
        """The observation for one Describe answer."""
        return cls(
            node_id=NodeId(desc.node_id),
            name=desc.name,
            agent_version=desc.agent_version,
            protocol_version=desc.protocol_version,
            engines=desc.engines,
            accelerator=desc.accelerator_name or desc.accelerator_kind,
            memory_total_bytes=desc.memory_total_bytes,
            cost=desc.cost,
            at=at,
        )


@dataclass(frozen=True, kw_only=True)
class ModelCounters:
    """One loaded model's live counts and monotonic counters, as a status reported them."""

    model: ModelName
    running: int = 0
    waiting: int = 0
    generated_tokens: int = 0
    busy_seconds: float = 0.0
    traits: ModelTraits = field(default_factory=ModelTraits)


@dataclass(frozen=True, kw_only=True)
class StatusReceived:
    """A status message arrived; `address` is where the stream that delivered it is connected."""

    node_id: NodeId
    at: float
    models: tuple[ModelCounters, ...] = ()
    memory_used_bytes: int = 0
    address: str = ""

    @classmethod
    def from_sample(cls, sample: NodeStatusSample, *, address: str, at: float) -> StatusReceived:
        """The observation for one WatchStatus message."""
        models = tuple(
            ModelCounters(
                model=ModelName(m.model),
                running=m.running,
                waiting=m.waiting,
                generated_tokens=m.generated_tokens,
                busy_seconds=m.busy_seconds,
                traits=ModelTraits(
                    capabilities=m.capabilities, context_length=m.context_length, engine=m.engine
                ),
            )
            for m in sample.models
        )
        return cls(
            node_id=NodeId(sample.node_id),
            at=at,
            models=models,
            memory_used_bytes=sample.memory_used_bytes,
            address=address,
        )


@dataclass(frozen=True, kw_only=True)
class StreamBroken:
    """The status stream ended with an error; `address` (if known) is where it was connected."""

    node_id: NodeId
    at: float
    reason: str = ""
    address: str = ""


@dataclass(frozen=True, kw_only=True)
class NodeUnreachable:
    """Reconnecting to the node failed on every address it is known at."""

    node_id: NodeId
    at: float


@dataclass(frozen=True, kw_only=True)
class NodeGone:
    """The node said goodbye over mDNS."""

    node_id: NodeId
    at: float


@dataclass(frozen=True, kw_only=True)
class NodeForgotten:
    """A rejected source was not heard from for long: its stand-in leaves the table, so that
    unauthenticated announcements cannot grow it without bound."""

    node_id: NodeId


@dataclass(frozen=True, kw_only=True)
class DrainSet:
    """The admin asked the node to take no new requests (or to take them again)."""

    node_id: NodeId
    draining: bool


@dataclass(frozen=True, kw_only=True)
class ModelWithdrawn:
    """Placement asked that `model` on the node take no new requests (a replica being moved)."""

    node_id: NodeId
    model: ModelName
    withdrawn: bool


@dataclass(frozen=True, kw_only=True)
class AliasesSet:
    """The admin changed the model aliases; the table carries them, in resolution order."""

    aliases: tuple[ModelAlias, ...]


Observation = (
    NodeSeen
    | NodeDescribed
    | StatusReceived
    | StreamBroken
    | NodeUnreachable
    | NodeGone
    | NodeForgotten
    | DrainSet
    | NodeRefused
    | ModelWithdrawn
    | AliasesSet
)


@dataclass(slots=True)
class _Node:
    """What the inventory knows about one node; mutated only by Inventory.apply."""

    node_id: NodeId
    described: NodeDescribed | None = None
    seen: dict[str, float] = field(default_factory=dict)  # address -> last sighting
    delivered: dict[str, float] = field(default_factory=dict)  # address -> last status from it
    address: str = ""  # the address whose stream delivers status
    status: StatusReceived | None = None
    broken_at: float | None = None
    unreachable_at: float | None = None
    gone_at: float | None = None
    refused: NodeRefused | None = None
    plaintext: set[str] = field(default_factory=set)  # addresses reached without TLS
    windows: dict[ModelName, ThroughputWindow] = field(default_factory=dict)


class Inventory:
    """Every node the controller knows, keyed by node id; owned by the controller alone."""

    def __init__(
        self, *, lost_after_s: float = 3.0, silent_after_s: float = 10.0, window_s: float = 30.0
    ) -> None:
        self.lost_after_s = lost_after_s
        # Backstop for a stream that hangs without breaking: no status for this long is LOST.
        self.silent_after_s = max(silent_after_s, lost_after_s)
        self.window_s = window_s
        self._nodes: dict[NodeId, _Node] = {}
        self._draining: set[NodeId] = set()  # kept for nodes not (yet) seen: drains outlive them
        self._withdrawn: set[tuple[NodeId, ModelName]] = set()
        self._aliases: tuple[ModelAlias, ...] = ()
        self._table = NodeTable()

    def apply(self, obs: Observation) -> None:
        """Take one observation into account."""
        match obs:
            case DrainSet(draining=True):
                self._draining.add(obs.node_id)
            case DrainSet(draining=False):
                self._draining.discard(obs.node_id)
            case ModelWithdrawn(withdrawn=True):
                self._withdrawn.add((obs.node_id, obs.model))
            case ModelWithdrawn(withdrawn=False):
                self._withdrawn.discard((obs.node_id, obs.model))
            case AliasesSet():
                self._aliases = obs.aliases
            case NodeSeen():
                node = self._node(obs.node_id)
                node.seen[obs.address] = max(obs.at, node.seen.get(obs.address, -math.inf))
                (node.plaintext.add if obs.plaintext else node.plaintext.discard)(obs.address)
                self._forget_stand_ins(obs)
            case NodeRefused():
                node = self._node(obs.node_id)
                if node.refused is None or obs.at >= node.refused.at:
                    node.refused = obs
            case NodeDescribed():
                self._node(obs.node_id).described = obs
            case StatusReceived():
                self._status(self._node(obs.node_id), obs)
            case StreamBroken() if obs.node_id in self._nodes:
                self._broken(self._nodes[obs.node_id], obs)
            case NodeUnreachable() if obs.node_id in self._nodes:
                node = self._nodes[obs.node_id]
                node.unreachable_at = _later(node.unreachable_at, obs.at)
            case NodeForgotten():
                self._nodes.pop(obs.node_id, None)
            case NodeGone() if obs.node_id in self._nodes:
                node = self._nodes[obs.node_id]
                node.gone_at = _later(node.gone_at, obs.at)

    def table(self, now: float) -> NodeTable:
        """The node table at `now`; a new version only when some node's view (or an alias)
        changed.

        Under load that is every status sample of every node (its load and rate move), which is
        why the controller holds back versions that differ only in those (`only_measured`)."""
        views = tuple(self._view(self._nodes[i], now) for i in sorted(self._nodes))
        if views != self._table.nodes or self._aliases != self._table.aliases:
            self._table = NodeTable(
                version=self._table.version + 1, nodes=views, aliases=self._aliases
            )
        return self._table

    def addresses(self, node_id: NodeId) -> tuple[str, ...]:
        """Every address the node was seen or heard from at, most recent first."""
        node = self._nodes.get(node_id)
        if node is None:
            return ()
        last = {
            a: max(node.seen.get(a, -math.inf), node.delivered.get(a, -math.inf))
            for a in node.seen.keys() | node.delivered.keys()
        }
        return tuple(sorted(last, key=lambda a: (-last[a], a)))

    def _node(self, node_id: NodeId) -> _Node:
        node = self._nodes.get(node_id)
        if node is None:
            node = self._nodes[node_id] = _Node(node_id=node_id)
        return node

    def _forget_stand_ins(self, seen: NodeSeen) -> None:
        """Drop a node known only as refused at this address: it was this one, now admitted.

        A peer that failed the handshake could not say who it is, so it was listed under a
        stand-in id; once it proves the secret it answers with its own, and is one node again.
        """
        for other in [
            n
            for n in self._nodes.values()
            if n.node_id != seen.node_id
            and n.refused is not None
            and n.refused.address == seen.address
            and n.described is None
            and n.status is None
            and n.refused.at <= seen.at
        ]:
            del self._nodes[other.node_id]

    def _status(self, node: _Node, obs: StatusReceived) -> None:
        if node.status is not None and obs.at < node.status.at:
            return  # a late message from a stream that has since been superseded
        node.status = obs
        if obs.address:
            node.delivered[obs.address] = obs.at
            # Stick with a stream that keeps delivering: two live streams must not flip-flop.
            quiet = obs.at - node.delivered.get(node.address, -math.inf)
            if quiet > self.lost_after_s:
                node.address = obs.address
        _update_windows(node.windows, obs, self.window_s)

    def _broken(self, node: _Node, obs: StreamBroken) -> None:
        node.broken_at = _later(node.broken_at, obs.at)
        if obs.address and obs.address == node.address:
            node.delivered.pop(obs.address, None)  # the next live stream takes over at once

    def _view(self, node: _Node, now: float) -> NodeView:
        state = _state(
            node, now, node.node_id in self._draining, self.lost_after_s, self.silent_after_s
        )
        desc, status = node.described, node.status
        models = status.models if status else ()
        tps, measured = _decode_tps(node.windows.values())
        refused = node.refused if state is NodeState.REJECTED else None
        reason = refused.reason if refused else ""
        if state is NodeState.INCOMPATIBLE and desc:
            reason = _incompatibility(desc)
        address = node.address or _latest(node.seen) or (refused.address if refused else "")
        name = desc.name if desc and desc.name else (refused.name if refused else "")
        return NodeView(
            node_id=node.node_id,
            name=name or node.node_id,
            address=address,
            engines=desc.engines if desc else (),
            state=state,
            models=tuple(
                sorted(m.model for m in models if (node.node_id, m.model) not in self._withdrawn)
            ),
            traits=tuple(sorted(((m.model, m.traits) for m in models), key=lambda p: p[0])),
            memory_total_bytes=desc.memory_total_bytes if desc else 0,
            memory_used_bytes=status.memory_used_bytes if status else 0,
            running=sum(m.running for m in models),
            waiting=sum(m.waiting for m in models),
            decode_tps=tps,
            tps_measured=measured,
            accelerator=desc.accelerator if desc else "",
            cost=desc.cost if desc else CostProfile(),
            reason=reason,
            plaintext=address in node.plaintext,
            agent_version=desc.agent_version if desc else "",
            protocol_version=desc.protocol_version if desc else "",
        )


def _state(
    node: _Node, now: float, draining: bool, lost_after_s: float, silent_after_s: float
) -> NodeState:
    """The node's state at `now`, from the facts alone."""
    last = node.status.at if node.status else -math.inf
    refused_at = node.refused.at if node.refused else -math.inf
    # A break or a goodbye counts only if no status (or refusal) came after it.
    if node.gone_at is not None and node.gone_at >= max(last, refused_at):
        return NodeState.LOST
    # Refused after its last status (or before ever sending one): no request may go there.
    if node.refused is not None and refused_at >= last:
        return NodeState.REJECTED
    # What it said last counts: upgraded to another major, it is not routed to any more.
    if node.described is not None and not protocol_compatible(node.described.protocol_version):
        return NodeState.INCOMPATIBLE
    broken_at = node.broken_at if node.broken_at is not None and node.broken_at >= last else None
    if broken_at is not None and now - broken_at >= lost_after_s:
        return NodeState.LOST
    # The grace is for a stream that reconnects; one that could not reconnect is lost now.
    unreachable_at = node.unreachable_at if node.unreachable_at is not None else -math.inf
    if broken_at is not None and unreachable_at >= broken_at:
        return NodeState.LOST
    if node.status is None:
        return NodeState.JOINING
    if now - last >= silent_after_s:
        return NodeState.LOST
    return NodeState.DRAINING if draining else NodeState.READY


def _incompatibility(desc: NodeDescribed) -> str:
    """Why a node is incompatible: both sides' versions."""
    return (
        f"agent {desc.agent_version or '?'} speaks protocol {desc.protocol_version}, "
        f"this head speaks {PROTOCOL_VERSION}"
    )


def _update_windows(
    windows: dict[ModelName, ThroughputWindow], obs: StatusReceived, window_s: float
) -> None:
    """Feed each model's counters to its window; forget models no longer loaded."""
    loaded = {m.model for m in obs.models}
    for model in [m for m in windows if m not in loaded]:
        del windows[model]
    for m in obs.models:
        window = windows.get(m.model)
        if window is None:
            window = windows[m.model] = ThroughputWindow(window_s)
        window.add(obs.at, m.generated_tokens, m.busy_seconds)


def _decode_tps(windows: Iterable[ThroughputWindow]) -> tuple[float, bool]:
    """The node's decode rate: the busiest model's, the slower one on a tie; else INITIAL_TPS."""
    # Models on one node share its accelerator, mostly taking turns: summing their rates would
    # count the same hardware twice. The model busiest lately is what new work will meet.
    rated = [
        (w.busy_seconds(), -rate, rate)
        for w in windows
        if (rate := w.tokens_per_second()) is not None
    ]
    if not rated:
        return INITIAL_TPS, False
    return max(rated)[2], True


def _later(when: float | None, at: float) -> float:
    """The later of an optional time and `at`."""
    return at if when is None else max(when, at)


def _latest(seen: dict[str, float]) -> str:
    """The most recently sighted address, or empty."""
    return max(seen, key=lambda a: (seen[a], a)) if seen else ""


# What nodes measure and report all the time; every other field of a view changes only when
# something happens to the node (it joins, is lost, drains, loads a model, changes address).
MEASURED = frozenset({"memory_used_bytes", "running", "waiting", "decode_tps", "tps_measured"})
_SHAPE = tuple(f.name for f in fields(NodeView) if f.name not in MEASURED)


def only_measured(old: NodeTable, new: NodeTable) -> bool:
    """Whether `new` differs from `old` in nothing but what its nodes measured: the same nodes,
    in the same states, with the same models, addresses and costs, and the same aliases."""
    return (
        old.aliases == new.aliases
        and len(old.nodes) == len(new.nodes)
        and all(
            all(getattr(a, f) == getattr(b, f) for f in _SHAPE)
            for a, b in zip(old.nodes, new.nodes, strict=True)
        )
    )
