"""The planner: desired placement + observed nodes -> the actions that close the gap. Pure.

    plan(desired, observed, now) -> [Load | Withdraw | Unload]

Limits live here, not in the loop that applies the actions:
- at most one load per node at a time (a node loading one model is asked for nothing else);
- after a failed load, a backoff per (node, model) that doubles up to a ceiling;
- after `crash_loop_after` failures in a row the pair is stopped, with the last reason kept,
  until the admin deploys the model again;
- a replica that is moved away is first withdrawn from routing, and unloaded only once its
  replacements are all loaded, the gateways have had time to see the withdrawal, and its
  in-flight requests have finished: a move drops no request.

Plan is idempotent: called again with the same facts it asks for the same actions, so the
loop may call it on every tick; what is in flight is a fact like any other.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from cluster.deployments.placement import DeploymentSpec
from cluster.types import ModelName, NodeId

Pair = tuple[NodeId, ModelName]  # one replica: (node id, served model name)


@dataclass(frozen=True, kw_only=True)
class Load:
    """Load the spec's model on the node."""

    node_id: NodeId
    spec: DeploymentSpec


@dataclass(frozen=True, kw_only=True)
class Withdraw:
    """Stop routing new requests for `model` to the node; it keeps serving what it has."""

    node_id: NodeId
    model: ModelName


@dataclass(frozen=True, kw_only=True)
class Unload:
    """Unload `model` from the node."""

    node_id: NodeId
    model: ModelName


Action = Load | Withdraw | Unload


@dataclass(frozen=True, kw_only=True)
class Failure:
    """Failed loads of one model on one node, in a row."""

    count: int
    last_at: float
    reason: str


@dataclass(frozen=True, kw_only=True)
class ObservedNode:
    """A node as reconcile sees it: whether it answers, what it has loaded and is running."""

    node_id: NodeId
    reachable: bool  # ready or draining: it can be asked to load or unload
    loaded: frozenset[ModelName] = frozenset()
    # What the gateways' table routes to there: a load's answer comes before the status that
    # puts the model in the table, and only then may the old replica stop taking requests.
    serving: frozenset[ModelName] = frozenset()
    busy: Mapping[ModelName, int] = field(default_factory=dict)  # model -> running + waiting


@dataclass(frozen=True, kw_only=True)
class Observed:
    """Everything observed that the plan depends on, `now` included."""

    now: float
    nodes: Mapping[NodeId, ObservedNode]
    loading: frozenset[Pair] = frozenset()  # loads in flight
    unloading: frozenset[Pair] = frozenset()
    withdrawn: Mapping[Pair, float] = field(default_factory=dict)  # pair -> since when
    failures: Mapping[Pair, Failure] = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True)
class ReconcileSettings:
    """The planner's limits."""

    backoff_min_s: float = 1.0
    backoff_max_s: float = 60.0
    crash_loop_after: int = 5
    withdraw_grace_s: float = 2.0  # time for every gateway to receive the new table


def backoff_s(failures: int, settings: ReconcileSettings) -> float:
    """Wait after `failures` failed loads in a row before the next try."""
    wait = settings.backoff_min_s * 2.0 ** max(failures - 1, 0)
    return min(wait, settings.backoff_max_s)


def crash_looped(failure: Failure | None, settings: ReconcileSettings) -> bool:
    """Whether the pair has failed often enough to stop trying."""
    return failure is not None and failure.count >= settings.crash_loop_after


def plan(
    specs: Sequence[DeploymentSpec],
    assignments: Mapping[ModelName, Sequence[NodeId]],
    observed: Observed,
    settings: ReconcileSettings | None = None,
) -> list[Action]:
    """The actions that move the observed state toward the assignments, within the limits."""
    settings = settings or ReconcileSettings()
    return [
        *_loads(specs, assignments, observed, settings),
        *_retirements(specs, assignments, observed, settings),
    ]


def _loads(
    specs: Sequence[DeploymentSpec],
    assignments: Mapping[ModelName, Sequence[NodeId]],
    observed: Observed,
    settings: ReconcileSettings,
) -> list[Load]:
    """One load per node at most, and none on a node already loading or backing off."""
    busy_nodes = {node for node, _ in observed.loading}
    actions: list[Load] = []
    for spec in sorted(specs, key=lambda s: s.name):
        for node_id in assignments.get(spec.name, ()):
            node = observed.nodes.get(node_id)
            pair = (node_id, spec.name)
            if node is None or not node.reachable or spec.name in node.loaded:
                continue
            if node_id in busy_nodes or pair in observed.unloading:
                continue
            failure = observed.failures.get(pair)
            if crash_looped(failure, settings):
                continue
            if failure and observed.now < failure.last_at + backoff_s(failure.count, settings):
                continue
            busy_nodes.add(node_id)
            actions.append(Load(node_id=node_id, spec=spec))
    return actions


def _retirements(
    specs: Sequence[DeploymentSpec],
    assignments: Mapping[ModelName, Sequence[NodeId]],
    observed: Observed,
    settings: ReconcileSettings,
) -> list[Withdraw | Unload]:
    """Withdraw, then unload, the managed replicas that are no longer assigned."""
    actions: list[Withdraw | Unload] = []
    for spec in sorted(specs, key=lambda s: s.name):
        assigned = set(assignments.get(spec.name, ()))
        replaced = spec.replicas == 0 or (
            bool(assigned)
            and all(
                n in observed.nodes and spec.name in observed.nodes[n].serving for n in assigned
            )
        )
        for node_id, node in sorted(observed.nodes.items()):
            pair = (node_id, spec.name)
            if node_id in assigned or spec.name not in node.loaded or not node.reachable:
                continue
            if not replaced or pair in observed.unloading:
                continue
            since = observed.withdrawn.get(pair)
            if since is None:
                actions.append(Withdraw(node_id=node_id, model=spec.name))
            elif (
                observed.now - since >= settings.withdraw_grace_s
                and node.busy.get(spec.name, 0) == 0
            ):
                actions.append(Unload(node_id=node_id, model=spec.name))
    return actions
