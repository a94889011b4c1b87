"""Routing by capability: a request that needs tools or constraints reaches only nodes whose model
advertises them; with none, a 400 that says what is missing."""

from __future__ import annotations

import pytest

from cluster.errors import InvalidRequest, NoCapacity
from cluster.gateway.clients import ClientPool
from cluster.gateway.forward import Forwarder, ForwardSettings
from cluster.gateway.routing import LocalLoad, RouteRequest, candidates, make_router
from cluster.types import ModelName, ModelTraits, NodeId, NodeState, NodeTable, NodeView
from node_agent.types import CONSTRAINTS, TOOLS, ChatMessage, GenerateRequest, Tool

DEMO = ModelName("demo")


def view(node_id: str, caps: frozenset[str] = frozenset(), **kw: object) -> NodeView:
    fields: dict[str, object] = {
        "node_id": NodeId(node_id),
        "name": node_id,
        "address": f"{node_id}:1",
        "engines": ("mlx",),
        "state": NodeState.READY,
        "models": (DEMO,),
        "decode_tps": 50.0,
        "tps_measured": True,
        "traits": ((DEMO, ModelTraits(capabilities=caps)),) if caps else (),
        **kw,
    }
    return NodeView(**fields)  # type: ignore[arg-type]


def table(*nodes: NodeView) -> NodeTable:
    return NodeTable(version=1, nodes=nodes)


def tool_request() -> GenerateRequest:
    return GenerateRequest(
        request_id="r1",
        model="demo",
        messages=(ChatMessage("user", "hi"),),
        tools=(Tool(name="f"),),
    )


def test_only_nodes_with_the_capabilities_are_candidates() -> None:
    t = table(view("old"), view("new", frozenset({TOOLS, CONSTRAINTS})))
    assert [n.name for n in candidates(t, DEMO)] == ["old", "new"]
    assert [n.name for n in candidates(t, DEMO, needs=frozenset({TOOLS}))] == ["new"]
    assert candidates(t, DEMO, needs=frozenset({"logprobs"})) == []


@pytest.mark.parametrize("policy", ["fastest", "round-robin", "least-outstanding"])
def test_every_policy_sends_a_tool_request_to_a_node_that_has_tools(policy: str) -> None:
    t = table(view("old", decode_tps=500.0), view("new", frozenset({TOOLS})))
    route = RouteRequest(DEMO, 64, needs=frozenset({TOOLS}))
    router = make_router(policy)
    assert all(router.choose(t, route, LocalLoad()) == "new" for _ in range(4))


def test_a_request_no_node_can_serve_is_a_400_naming_the_capability() -> None:
    forwarder = Forwarder(make_router("fastest"), ClientPool(), ForwardSettings())
    needs = tool_request().needs()
    with pytest.raises(InvalidRequest, match="tools"):
        forwarder.check_model(table(view("old")), "demo", needs)
    lost = view("new", frozenset({TOOLS}), state=NodeState.LOST)
    with pytest.raises(NoCapacity):
        forwarder.check_model(table(view("old"), lost), "demo", needs)
    assert forwarder.check_model(table(view("old")), "demo", frozenset()) is None  # plain: fine


@pytest.mark.parametrize("policy", ["fastest", "round-robin", "least-outstanding"])
def test_an_older_agent_gets_plain_requests_only_and_an_incompatible_one_none(policy: str) -> None:
    # An older agent says no capabilities in Describe nor for its model: traits are empty.
    old = view("old", decode_tps=500.0, agent_version="0.1", protocol_version="1.0")
    new = view("new", frozenset({TOOLS}), agent_version="0.2", protocol_version="1.1")
    future = view("future", frozenset({TOOLS}), state=NodeState.INCOMPATIBLE, decode_tps=900.0)
    t, router = table(old, new, future), make_router(policy)
    tools = RouteRequest(DEMO, 64, needs=frozenset({TOOLS}))
    assert {router.choose(t, tools, LocalLoad()) for _ in range(6)} == {"new"}
    plain = {router.choose(t, RouteRequest(DEMO, 64), LocalLoad()) for _ in range(6)}
    assert "future" not in plain and plain <= {"old", "new"}
    assert [n.name for n in candidates(t, DEMO)] == ["old", "new"]
