"""When a request for an overflow-routed model goes to the provider: pure, over fixed tables."""

from __future__ import annotations

from cluster.gateway.overflow import (
    ABSENT,
    SATURATED,
    TOO_LONG,
    overflow_reason,
    start_times_s,
)
from cluster.gateway.routing import LocalLoad, RouteRequest
from cluster.types import ModelName, ModelTraits, NodeId, NodeState, NodeTable, NodeView
from node_agent.types import TOOLS

M = ModelName("m")
A, B = NodeId("a"), NodeId("b")


def node(node_id: NodeId, tps: float = 50.0, context: int = 0, **kw: object) -> NodeView:
    fields: dict[str, object] = dict(
        node_id=node_id,
        name=node_id,
        address=f"{node_id}:1",
        engines=("mlx",),
        state=NodeState.READY,
        models=(M,),
        decode_tps=tps,
        tps_measured=True,
        traits=((M, ModelTraits(context_length=context)),),
    )
    fields.update(kw)
    return NodeView(**fields)  # type: ignore[arg-type]


def table(*nodes: NodeView) -> NodeTable:
    return NodeTable(version=1, nodes=nodes)


def req(tokens: int = 100, chars: int = 40, needs: frozenset[str] = frozenset()) -> RouteRequest:
    return RouteRequest(M, tokens, (), needs, chars)


def test_an_idle_node_keeps_the_request_local_even_with_no_wait() -> None:
    assert overflow_reason(table(node(A)), req(), LocalLoad(), 0.0) is None


def test_a_request_is_rented_once_the_work_ahead_outlasts_the_wait() -> None:
    load = LocalLoad()
    load.start(A, 100)  # 2 s of work ahead at 50 tokens/s
    assert overflow_reason(table(node(A)), req(), load, 2.0) is None
    assert overflow_reason(table(node(A)), req(), load, 1.9) == SATURATED


def test_one_node_with_room_is_enough() -> None:
    load = LocalLoad()
    load.start(A, 1_000)
    assert overflow_reason(table(node(A), node(B)), req(), load, 1.0) is None
    load.start(B, 1_000)
    assert overflow_reason(table(node(A), node(B)), req(), load, 1.0) == SATURATED


def test_work_the_node_reports_from_elsewhere_counts_too() -> None:
    busy = node(A, running=4, waiting=2)  # 6 requests this replica did not send
    assert overflow_reason(table(busy), req(), LocalLoad(), 5.0) == SATURATED
    assert start_times_s([busy], LocalLoad(), avg_request_tokens=10) == [60 / 50]


def test_lost_draining_or_missing_nodes_mean_the_model_is_absent() -> None:
    assert overflow_reason(table(), req(), LocalLoad(), 60.0) == ABSENT
    lost = node(A, state=NodeState.LOST)
    draining = node(B, state=NodeState.DRAINING)
    assert overflow_reason(table(lost, draining), req(), LocalLoad(), 60.0) == ABSENT


def test_a_node_without_what_the_request_needs_does_not_count() -> None:
    needs = frozenset({TOOLS})
    assert overflow_reason(table(node(A)), req(needs=needs), LocalLoad(), 60.0) == ABSENT


def test_a_prompt_past_every_nodes_context_is_rented() -> None:
    small, big = node(A, context=1_000), node(B, context=8_000)
    long = req(chars=4 * 2_000)
    assert overflow_reason(table(small), long, LocalLoad(), 60.0) == TOO_LONG
    assert overflow_reason(table(small, big), long, LocalLoad(), 60.0) is None
    assert overflow_reason(table(node(A)), long, LocalLoad(), 60.0) is None  # context unsaid
