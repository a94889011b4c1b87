"""Placement: which nodes hold each deployed model's replicas. Pure: no I/O, no clock.

A replica's memory = weights (from the model's files) + KV cache for context x concurrency +
the engine's overhead, and a node takes replicas only up to its budget (a fraction of its
memory, less what models placement does not manage already hold). Order of preference:

    1. where the replica already is (the last placement, then where it is loaded): nothing moves
       or reloads without a reason, and a controller restart places nothing twice;
    2. nodes that have the model on disk (no download);
    3. one replica per node (spread: a node serves a name once);
    4. the fullest node that still fits (pack: large free nodes stay free for large models).

When a replica cannot be placed, `Unplaced.reason` says why, with the numbers.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from cluster.types import ModelName, NodeId

GIB = 1 << 30
MIB = 1 << 20
DEFAULT_OVERHEAD = {"mlx": 256 * MIB, "vllm": 1 * GIB}
ANY_ENGINE_OVERHEAD = 512 * MIB


@dataclass(frozen=True, kw_only=True)
class DeploymentSpec:
    """What the admin wants running: the desired state of one served model."""

    name: ModelName  # the name clients ask for
    model: str  # what to load (a reference, not a served name): a local path, a hub id, `demo`
    engine: str = ""  # "mlx", "vllm", or "" for any
    replicas: int = 1  # 0: undeployed, its replicas are unloaded
    nodes: tuple[NodeId, ...] = ()  # pinned node ids; () for any node
    context_length: int = 0  # 0: the model's own
    concurrency: int = 1  # requests expected at once per replica: sizes the KV cache
    # The tool-call parser: "" infers it from the model, "none" parses no calls (no TOOLS), else
    # an mlx-lm family (parsing.tool_parser_families). Sent with each load; a change to it (or
    # to any field but replicas and nodes) applies at the replica's next load, not at once.
    tool_parser: str = ""


@dataclass(frozen=True, kw_only=True)
class ModelSize:
    """A model's sizes, read from its files (weights) and config (KV per token, context)."""

    weights_bytes: int
    kv_bytes_per_token: int
    context_length: int


@dataclass(frozen=True, kw_only=True)
class NodeSlot:
    """A node as placement sees it."""

    node_id: NodeId
    name: str
    engines: tuple[str, ...]
    memory_total_bytes: int
    available: bool = True  # ready and not draining: may take new replicas
    on_disk: frozenset[str] = frozenset()  # model references it has on disk
    loaded: frozenset[ModelName] = frozenset()  # served names loaded there now
    other_bytes: int = 0  # memory held by models placement does not manage
    tps: float = 0.0  # measured decode tokens/s (for rebalance)


@dataclass(frozen=True, kw_only=True)
class PlacementSettings:
    """Knobs: the share of a node's memory models may use, and each engine's overhead."""

    budget_fraction: float = 0.8
    overhead_bytes: Mapping[str, int] = field(default_factory=lambda: dict(DEFAULT_OVERHEAD))


@dataclass(frozen=True, kw_only=True)
class Unplaced:
    """A replica that has no node, and why."""

    model: ModelName
    replica: int  # 1-based
    reason: str


@dataclass(frozen=True, kw_only=True)
class Placement:
    """Nodes per model (in preference order), what could not be placed, and each estimate."""

    assignments: Mapping[ModelName, tuple[NodeId, ...]]
    unplaced: tuple[Unplaced, ...] = ()
    estimates: Mapping[ModelName, int] = field(default_factory=dict)


def human(n: float) -> str:
    """Bytes for people: GiB with two decimals, or MiB when small."""
    return f"{n / GIB:.2f} GiB" if abs(n) >= GIB / 10 else f"{n / MIB:.1f} MiB"


def context_of(spec: DeploymentSpec, size: ModelSize) -> int:
    """The context length a replica will be loaded with."""
    return spec.context_length or size.context_length


def estimate(spec: DeploymentSpec, size: ModelSize, overhead: int) -> int:
    """Bytes one replica needs: weights + KV for context x concurrency + engine overhead."""
    kv = size.kv_bytes_per_token * context_of(spec, size) * max(spec.concurrency, 1)
    return size.weights_bytes + kv + overhead


def breakdown(spec: DeploymentSpec, size: ModelSize, overhead: int) -> str:
    """The estimate with its parts, for error messages."""
    kv = size.kv_bytes_per_token * context_of(spec, size) * max(spec.concurrency, 1)
    return (
        f"{human(estimate(spec, size, overhead))} (weights {human(size.weights_bytes)} + "
        f"KV {human(kv)} for {context_of(spec, size)} tokens x {max(spec.concurrency, 1)} + "
        f"overhead {human(overhead)})"
    )


def overhead_for(spec: DeploymentSpec, node: NodeSlot | None, settings: PlacementSettings) -> int:
    """The engine overhead on `node`: the spec's engine, else the node's, else the default."""
    engine = spec.engine or (node.engines[0] if node and node.engines else "")
    return settings.overhead_bytes.get(engine, ANY_ENGINE_OVERHEAD)


def budget(node: NodeSlot, settings: PlacementSettings) -> int:
    """Bytes of the node that managed replicas may use."""
    return int(node.memory_total_bytes * settings.budget_fraction) - node.other_bytes


def place(
    specs: Sequence[DeploymentSpec],
    sizes: Mapping[ModelName, ModelSize | None],
    nodes: Sequence[NodeSlot],
    previous: Mapping[ModelName, Sequence[NodeId]],
    settings: PlacementSettings | None = None,
    avoid: frozenset[tuple[NodeId, ModelName]] = frozenset(),
) -> Placement:
    """Choose nodes for every replica of every spec; `sizes` is keyed by spec name.

    `avoid` holds (node id, model) pairs that must not be chosen: loads that crash-looped there.
    """
    settings = settings or PlacementSettings()
    used = {n.node_id: 0 for n in nodes}
    assignments: dict[ModelName, tuple[NodeId, ...]] = {}
    unplaced: list[Unplaced] = []
    estimates: dict[ModelName, int] = {}

    # Pinned specs first (they have no choice), then the largest: big models pack first.
    def order(s: DeploymentSpec) -> tuple[bool, int, ModelName]:
        size = sizes.get(s.name)
        return (not s.nodes, -(size.weights_bytes if size else 0), s.name)

    for spec in sorted((s for s in specs if s.replicas > 0), key=order):
        size = sizes.get(spec.name)
        if size is None:
            assignments[spec.name] = ()
            why = (
                f"the size of {spec.model!r} is unknown: no node has it on disk and it is "
                "not a model directory on the controller's machine"
            )
            unplaced += [
                Unplaced(model=spec.name, replica=i + 1, reason=why) for i in range(spec.replicas)
            ]
            continue
        allowed = [n for n in nodes if (n.node_id, spec.name) not in avoid]
        chosen = _choose(spec, size, allowed, previous.get(spec.name, ()), used, settings)
        first = next((n for n in nodes if chosen and n.node_id == chosen[0]), None)
        estimates[spec.name] = estimate(spec, size, overhead_for(spec, first, settings))
        assignments[spec.name] = chosen
        for i in range(len(chosen), spec.replicas):
            why = _why_not(spec, size, allowed, chosen, used, settings)
            if len(allowed) < len(nodes):
                why += "; loads kept failing on " + ", ".join(
                    n.name for n in nodes if (n.node_id, spec.name) in avoid
                )
            unplaced.append(Unplaced(model=spec.name, replica=i + 1, reason=why))
    return Placement(assignments=assignments, unplaced=tuple(unplaced), estimates=estimates)


def _choose(
    spec: DeploymentSpec,
    size: ModelSize,
    nodes: Sequence[NodeSlot],
    previous: Sequence[NodeId],
    used: dict[NodeId, int],
    settings: PlacementSettings,
) -> tuple[NodeId, ...]:
    """The nodes for one spec's replicas, charging each one's memory to `used`."""
    by_id = {n.node_id: n for n in nodes}
    chosen: list[NodeId] = []

    def fits(node: NodeSlot) -> bool:
        need = estimate(spec, size, overhead_for(spec, node, settings))
        return used[node.node_id] + need <= budget(node, settings)

    def take(node: NodeSlot) -> None:
        used[node.node_id] += estimate(spec, size, overhead_for(spec, node, settings))
        chosen.append(node.node_id)

    sticky = [*previous, *sorted(n.node_id for n in nodes if spec.name in n.loaded)]
    for node_id in dict.fromkeys(sticky):
        node = by_id.get(node_id)
        if len(chosen) < spec.replicas and node and _eligible(spec, node) and fits(node):
            take(node)
    while len(chosen) < spec.replicas:
        free = [n for n in nodes if n.node_id not in chosen and _eligible(spec, n) and fits(n)]
        if not free:
            break
        take(
            min(
                free,
                key=lambda n: (
                    spec.model not in n.on_disk,
                    budget(n, settings) - used[n.node_id],
                    n.name,
                ),
            )
        )
    return tuple(chosen)


def _eligible(spec: DeploymentSpec, node: NodeSlot) -> bool:
    """Whether the node may hold a replica of the spec at all (memory aside)."""
    engine_ok = not spec.engine or spec.engine in node.engines
    pinned_ok = not spec.nodes or node.node_id in spec.nodes
    return node.available and engine_ok and pinned_ok


def _why_not(
    spec: DeploymentSpec,
    size: ModelSize,
    nodes: Sequence[NodeSlot],
    chosen: Sequence[NodeId],
    used: Mapping[NodeId, int],
    settings: PlacementSettings,
) -> str:
    """Why no further replica of the spec fits anywhere, with the numbers."""
    pinned = [n for n in nodes if not spec.nodes or n.node_id in spec.nodes]
    if spec.nodes and len(pinned) < len(spec.nodes):
        known = {n.node_id for n in nodes}
        missing = ", ".join(i[:12] for i in spec.nodes if i not in known)
        return f"pinned node(s) {missing} are not known to the controller"
    ready = [n for n in pinned if n.available]
    if not ready:
        return "no node is ready to take it" + (" among the pinned ones" if spec.nodes else "")
    engine = [n for n in ready if not spec.engine or spec.engine in n.engines]
    if not engine:
        return f"no ready node runs engine {spec.engine!r}"
    free = [n for n in engine if n.node_id not in chosen]
    if not free:
        return f"every eligible node ({len(engine)}) already holds one; a node serves a model once"
    best = max(free, key=lambda n: (budget(n, settings) - used[n.node_id], n.name))
    room = budget(best, settings) - used[best.node_id]
    return (
        f"needs {breakdown(spec, size, overhead_for(spec, best, settings))}; the most room "
        f"is on {best.name}: {human(max(room, 0))} free of its budget "
        f"{human(best.memory_total_bytes * settings.budget_fraction)} "
        f"({settings.budget_fraction:.0%} of {human(best.memory_total_bytes)})"
    )
