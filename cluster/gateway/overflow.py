"""Whether a request for a model with an overflow route (`cluster route MODEL --overflow`) goes
to the provider rather than a local node. Pure: no I/O, no clock.

Local nodes come first. A request is rented only when
- no local node can serve it at all (`absent`): every node serving the model is lost, draining
  or gone, or none serves it with what the request needs (tools, constraints);
- its prompt fits no local node's context (`too_long`), where the nodes say their context;
- every local node that could serve it is busy past the route's wait (`saturated`): by the
  router's own view (routing.py), the work queued ahead of it on the node -- this replica's
  outstanding tokens plus what the node reports beyond them -- takes longer than the wait at
  the node's measured rate. That view is the one the router already keeps for every request,
  so the decision costs a few microseconds and no call.
"""

from __future__ import annotations

from collections.abc import Sequence

from cluster.gateway.routing import (
    AVG_REQUEST_TOKENS,
    CHARS_PER_TOKEN,
    LocalLoad,
    RouteRequest,
    candidates,
    queued_tokens,
)
from cluster.throughput import INITIAL_TPS
from cluster.types import NodeTable, NodeView

ABSENT = "absent"
TOO_LONG = "too_long"
SATURATED = "saturated"


def overflow_reason(
    table: NodeTable,
    request: RouteRequest,
    load: LocalLoad,
    wait_s: float,
    *,
    avg_request_tokens: int = AVG_REQUEST_TOKENS,
) -> str | None:
    """Why `request` goes to the provider (ABSENT, TOO_LONG or SATURATED), or None: local."""
    nodes = candidates(table, request.model, needs=request.needs)
    if not nodes:
        return ABSENT
    prompt_tokens = request.prompt_chars // CHARS_PER_TOKEN
    fitting = [n for n in nodes if _fits(n, request, prompt_tokens)]
    if not fitting:
        return TOO_LONG
    if min(start_times_s(fitting, load, avg_request_tokens)) > wait_s:
        return SATURATED
    return None


def start_times_s(
    nodes: Sequence[NodeView], load: LocalLoad, avg_request_tokens: int = AVG_REQUEST_TOKENS
) -> list[float]:
    """Estimated seconds before each node gets through the work queued ahead of a new request;
    0 for a node with nothing queued."""
    queued = queued_tokens(nodes, load, avg_request_tokens)
    times = []
    for n in nodes:
        tps = n.decode_tps if n.decode_tps > 0 else INITIAL_TPS
        ahead = queued[n.node_id]
        times.append(0.0 if ahead == 0 else load.link_s.get(n.node_id, 0.0) + ahead / tps)
    return times


def _fits(node: NodeView, request: RouteRequest, prompt_tokens: int) -> bool:
    """Whether the prompt (estimated from its characters) fits the node's context; a node that
    does not say its context is taken to fit, as it would be routed to."""
    context = node.model_traits(request.model).context_length
    return context <= 0 or prompt_tokens < context
