"""Routing policy: which node will answer a request fastest.

Pure and in-process: no I/O, no clock, microseconds per decision. The gateway owns a `LocalLoad`
and a `Router` per replica and calls `choose` on every request (again, with `exclude`, on
failover) and `record` once a node has taken the request's prompt into its cache.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from cluster.throughput import INITIAL_TPS
from cluster.types import ModelName, NodeId, NodeTable, NodeView

AVG_REQUEST_TOKENS = 256
AFFINITY_KEYS = 10_000
CHARS_PER_TOKEN = 4
# A prompt token costs a fraction of a decode token: prefill runs the whole prompt through each
# matmul at once, decode runs one token per step. 1/8 is a conservative ratio for both MLX and vLLM.
PREFILL_TOKENS_PER_DECODE_TOKEN = 8
# Clients often ask for max_tokens far beyond what they generate; an uncapped budget would make
# one request look like a hundred while it is in flight.
DECODE_CAP = 2048
# What the network adds on the way to each node, learnt from finished requests: each moves the
# estimate a quarter of the way; a sample counts for at most LINK_CAP_S (a stream stalled by an
# outage says nothing about the link once it is back); and what is not refreshed halves every
# LINK_HALF_LIFE_S, so a node avoided for its link is tried again, and a healed link is noticed.
LINK_EWMA = 0.25
LINK_CAP_S = 1.0
LINK_HALF_LIFE_S = 10.0
# A node's measured rate is only as fresh as the work it was given: one measured while the machine
# was contended, or at a lower concurrency than its neighbours (tokens per busy second grow with
# the batch), can look too slow to ever be chosen again, and then is never measured again. So
# while the best node is busy, an idle node this replica has sent nothing to for this long gets
# one request, as an unmeasured node does. 30 s is the rate window's length (cluster/throughput.py).
EXPLORE_AFTER_S = 30.0
# A node's reported running/waiting counts trail the gateway by a status interval plus the trip
# through the controller: for this long a request this replica saw end may still be counted there.
STATUS_LAG_S = 1.0


@dataclass(frozen=True, slots=True)
class RouteRequest:
    """What routing needs to know about a request: model, size, and its prefix chain."""

    model: ModelName
    expected_tokens: int
    prefix_keys: tuple[int, ...] = ()
    needs: frozenset[str] = frozenset()  # capabilities the node's model must have (tools, ...)
    prompt_chars: int = 0  # the prompt's length, for how long its prefill may take


@dataclass(slots=True)
class LocalLoad:
    """One gateway replica's in-flight work per node; owned and mutated by that replica only.

    `progress` and `finish` take tokens of one request: callers pass at most what that request
    still had outstanding, so one long answer cannot erase its neighbours' share.
    """

    outstanding: dict[NodeId, int] = field(default_factory=dict)
    in_flight: dict[NodeId, int] = field(default_factory=dict)
    link_s: dict[NodeId, float] = field(default_factory=dict)  # what the network adds, smoothed
    link_at: float | None = None  # when the link estimates were last updated (monotonic s)
    ended: dict[NodeId, list[float]] = field(default_factory=dict)  # recent ends (monotonic s)
    now: float | None = None  # the latest `tick` (monotonic s); None before the first
    started: dict[NodeId, float] = field(default_factory=dict)  # last start on each node, at `now`

    def start(self, node: NodeId, tokens: int) -> None:
        """A request of `tokens` expected tokens was sent to `node`."""
        self.outstanding[node] = self.outstanding.get(node, 0) + max(tokens, 0)
        self.in_flight[node] = self.in_flight.get(node, 0) + 1
        if self.now is not None:
            self.started[node] = self.now

    def progress(self, node: NodeId, tokens: int) -> None:
        """`node` generated `tokens` more tokens for one of this replica's requests."""
        self.outstanding[node] = max(self.outstanding.get(node, 0) - max(tokens, 0), 0)

    def delivered(self, node: NodeId, overhead_s: float, at: float) -> None:
        """A request took `overhead_s` longer here than on `node` (latency, loss, transport)."""
        if self.link_at is not None and at > self.link_at:
            fade = 0.5 ** ((at - self.link_at) / LINK_HALF_LIFE_S)
            for other in self.link_s:
                self.link_s[other] *= fade
        self.link_at = max(at, self.link_at or at)
        sample, last = min(max(overhead_s, 0.0), LINK_CAP_S), self.link_s.get(node, 0.0)
        self.link_s[node] = last + LINK_EWMA * (sample - last)

    def finish(self, node: NodeId, remaining: int, at: float | None = None) -> None:
        """A request on `node` ended (done, failed or cancelled) with `remaining` tokens unspent.

        With `at`, the end is remembered for STATUS_LAG_S, while the node may still report it.
        """
        if at is not None:
            self.ended.setdefault(node, []).append(at)
        left = self.in_flight.get(node, 0) - 1
        if left > 0:
            self.in_flight[node] = left
            self.progress(node, remaining)
        else:  # nothing in flight: drop both, so estimation drift cannot accumulate
            self.in_flight.pop(node, None)
            self.outstanding.pop(node, None)

    def tick(self, now: float) -> None:
        """Take the time (once per request, before routing it); forget ends that every node's
        reported counts have caught up with by `now`."""
        self.now = now
        horizon = now - STATUS_LAG_S
        for node, times in list(self.ended.items()):
            kept = [t for t in times if t > horizon]
            if kept:
                self.ended[node] = kept
            else:
                del self.ended[node]

    def unreported(self, node: NodeId) -> int:
        """Requests of this replica on `node` that may still be in the node's reported counts."""
        return self.in_flight.get(node, 0) + len(self.ended.get(node, ()))


class Router(Protocol):
    """A routing policy; one instance per gateway replica."""

    def choose(
        self,
        table: NodeTable,
        request: RouteRequest,
        load: LocalLoad,
        exclude: frozenset[NodeId] = frozenset(),
    ) -> NodeId | None:
        """The node to send `request` to, or None when no node can take it."""
        ...

    def record(self, request: RouteRequest, node: NodeId) -> None:
        """`node` served `request`: its cache now holds the request's prefix."""
        ...


def candidates(
    table: NodeTable,
    model: ModelName,
    exclude: frozenset[NodeId] = frozenset(),
    needs: frozenset[str] = frozenset(),
) -> list[NodeView]:
    """Routable nodes that serve `model` with every capability in `needs`, minus `exclude`."""
    return [
        n
        for n in table.nodes
        if n.routable
        and model in n.models
        and n.node_id not in exclude
        and n.can_serve(model, needs)
    ]


def queued_tokens(
    nodes: Sequence[NodeView], load: LocalLoad, avg_request_tokens: int
) -> dict[NodeId, int]:
    """Tokens queued on each node: this replica's own plus an estimate for work it cannot see."""
    outstanding = load.outstanding
    queued: dict[NodeId, int] = {}
    for n in nodes:
        # Other gateway replicas and direct clients show up only in the node's reported counts,
        # which also still hold this replica's requests that ended less than a status lag ago.
        unseen = n.running + n.waiting - load.unreported(n.node_id)
        queued[n.node_id] = outstanding.get(n.node_id, 0) + max(unseen, 0) * avg_request_tokens
    return queued


def finish_times_s(
    nodes: Sequence[NodeView], load: LocalLoad, tokens: int, avg_request_tokens: int
) -> dict[NodeId, float]:
    """Estimated seconds until each node would finish a new request of `tokens` tokens."""
    queued = queued_tokens(nodes, load, avg_request_tokens)
    times: dict[NodeId, float] = {}
    for n in nodes:
        # A node that reports no rate (0, or nonsense) is treated as not yet measured.
        tps = n.decode_tps if n.decode_tps > 0 else INITIAL_TPS
        # The node's own rate cannot see its link; the client waits for that too.
        link = load.link_s.get(n.node_id, 0.0)
        times[n.node_id] = link + (queued[n.node_id] + tokens) / tps
    return times


class PrefixAffinity:
    """Bounded LRU map from prefix key to the node that last served that prefix."""

    def __init__(self, capacity: int = AFFINITY_KEYS) -> None:
        if capacity < 1:
            raise ValueError("affinity capacity must be at least 1")
        self.capacity = capacity
        self._nodes: OrderedDict[int, NodeId] = OrderedDict()

    def __len__(self) -> int:
        """Number of prefix keys remembered."""
        return len(self._nodes)

    def lookup(self, keys: Sequence[int], allowed: Collection[NodeId]) -> NodeId | None:
        """The node that served the longest of `keys` among `allowed`, if any."""
        nodes = self._nodes
        for key in reversed(keys):
            node = nodes.get(key)
            if node is not None and node in allowed:
                return node
        return None

    def record(self, keys: Sequence[int], node: NodeId) -> None:
        """Remember that `node` holds every prefix in `keys`; evict the least recently used."""
        nodes = self._nodes
        for key in keys:
            nodes[key] = node
            nodes.move_to_end(key)
        while len(nodes) > self.capacity:
            nodes.popitem(last=False)


class FastestRouter:
    """Least estimated time to finish, with prefix affinity under bounded load."""

    def __init__(
        self,
        *,
        affinity: bool = True,
        balance_factor: float = 2.0,
        balance_slack_s: float = 0.5,
        avg_request_tokens: int = AVG_REQUEST_TOKENS,
        affinity_keys: int = AFFINITY_KEYS,
        probe_unmeasured: bool = True,
        explore_after_s: float | None = EXPLORE_AFTER_S,
    ) -> None:
        if balance_factor < 1.0 or balance_slack_s < 0.0 or avg_request_tokens < 0:
            raise ValueError("need balance_factor >= 1, balance_slack_s >= 0, avg >= 0")
        if explore_after_s is not None and explore_after_s <= 0:
            raise ValueError("explore_after_s must be positive (None: never explore)")
        self.balance_factor = balance_factor
        self.balance_slack_s = balance_slack_s
        self.avg_request_tokens = avg_request_tokens
        self.affinity = PrefixAffinity(affinity_keys) if affinity else None
        self.probe_unmeasured = probe_unmeasured
        self.explore_after_s = explore_after_s

    def choose(
        self,
        table: NodeTable,
        request: RouteRequest,
        load: LocalLoad,
        exclude: frozenset[NodeId] = frozenset(),
    ) -> NodeId | None:
        """The candidate that finishes first, or the prefix's node unless it is overloaded."""
        nodes = candidates(table, request.model, exclude, request.needs)
        if not nodes:
            return None
        eta = finish_times_s(nodes, load, request.expected_tokens, self.avg_request_tokens)
        best = min(eta, key=lambda n: (eta[n], load.in_flight.get(n, 0), n))
        if self.affinity is not None and request.prefix_keys:
            sticky = self.affinity.lookup(request.prefix_keys, eta)
            # Bounded load, as SGLang's cache-aware policy: a relative and an absolute margin.
            if sticky is not None and eta[sticky] <= (
                self.balance_factor * eta[best] + self.balance_slack_s
            ):
                return sticky
        if self.probe_unmeasured and (new := probe(nodes, load)) is not None:
            return new
        if self.explore_after_s is not None and not idle(best, nodes, load):
            return explore(nodes, load, self.explore_after_s) or best
        return best

    def record(self, request: RouteRequest, node: NodeId) -> None:
        """Remember `node` for every prefix of `request`."""
        if self.affinity is not None:
            self.affinity.record(request.prefix_keys, node)


def probe(nodes: Sequence[NodeView], load: LocalLoad) -> NodeId | None:
    """An idle node whose speed is not measured yet: one request at a time goes there.

    Without it a new node, starting from the conservative estimate, would never be chosen
    while the others keep up, and so would never be measured.
    """
    for n in nodes:
        if not n.tps_measured and _idle(n, load):
            return n.node_id
    return None


def explore(nodes: Sequence[NodeView], load: LocalLoad, after_s: float) -> NodeId | None:
    """The idle node this replica has left alone longest, if that is `after_s` or more.

    A node this replica never sent anything is due at once; before the first tick (no time
    known) nothing is explored. See EXPLORE_AFTER_S.
    """
    if load.now is None:
        return None
    due = load.now - after_s
    stale = [
        (load.started.get(n.node_id, float("-inf")), n.node_id) for n in nodes if _idle(n, load)
    ]
    oldest = min(stale, default=None)
    return oldest[1] if oldest is not None and oldest[0] <= due else None


def idle(node: NodeId, nodes: Sequence[NodeView], load: LocalLoad) -> bool:
    """Whether `node` (one of `nodes`) runs nothing, as reported and as this replica knows."""
    return any(n.node_id == node and _idle(n, load) for n in nodes)


def _idle(n: NodeView, load: LocalLoad) -> bool:
    return n.running + n.waiting == 0 and not load.in_flight.get(n.node_id)


class RoundRobinRouter:
    """Each candidate in turn, in node-id order; ignores load and speed."""

    def __init__(self) -> None:
        self._last: NodeId | None = None

    def choose(
        self,
        table: NodeTable,
        request: RouteRequest,
        load: LocalLoad,
        exclude: frozenset[NodeId] = frozenset(),
    ) -> NodeId | None:
        """The first candidate after the one chosen last, wrapping around."""
        ids = sorted(n.node_id for n in candidates(table, request.model, exclude, request.needs))
        if not ids:
            return None
        # "Next id after the last one" stays fair when nodes join or leave between calls.
        last = self._last
        chosen = next((i for i in ids if last is None or i > last), ids[0])
        self._last = chosen
        return chosen

    def record(self, request: RouteRequest, node: NodeId) -> None:
        """Round-robin keeps no affinity."""


class LeastOutstandingRouter:
    """Fewest outstanding tokens (this replica's plus reported), ignoring speed."""

    def __init__(self, *, avg_request_tokens: int = AVG_REQUEST_TOKENS) -> None:
        self.avg_request_tokens = avg_request_tokens

    def choose(
        self,
        table: NodeTable,
        request: RouteRequest,
        load: LocalLoad,
        exclude: frozenset[NodeId] = frozenset(),
    ) -> NodeId | None:
        """The candidate with the least queued work; ties by fewer in flight, then node id."""
        nodes = candidates(table, request.model, exclude, request.needs)
        if not nodes:
            return None
        queued = queued_tokens(nodes, load, self.avg_request_tokens)
        return min(queued, key=lambda n: (queued[n], load.in_flight.get(n, 0), n))

    def record(self, request: RouteRequest, node: NodeId) -> None:
        """Least-outstanding keeps no affinity."""


POLICIES: dict[str, Callable[..., Router]] = {
    "fastest": FastestRouter,
    "round-robin": RoundRobinRouter,
    "least-outstanding": LeastOutstandingRouter,
}


def make_router(name: str, **knobs: object) -> Router:
    """The policy called `name`, built with `knobs` (keyword arguments of its class)."""
    try:
        factory = POLICIES[name]
    except KeyError:
        choices = ", ".join(POLICIES)
        raise ValueError(f"unknown routing policy {name!r}; choose one of: {choices}") from None
    return factory(**knobs)


def expected_tokens(prompt_chars: int, max_tokens: int | None, default_max: int = 256) -> int:
    """A request's cost in decode-token equivalents: its decode budget plus a prefill share."""
    if max_tokens is None or max_tokens <= 0:  # 0 means "the node's default", as on the wire
        decode = default_max
    else:
        decode = min(max_tokens, max(DECODE_CAP, default_max))
    prefill = max(prompt_chars, 0) // (CHARS_PER_TOKEN * PREFILL_TOKENS_PER_DECODE_TOKEN)
    return max(decode + prefill, 1)
