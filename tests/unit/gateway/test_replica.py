"""The gateway replica (gateway/replica.py): how its settings become a routing policy, and what
/v1/models says of each model."""

from __future__ import annotations

from openai.types import Model

from cluster.gateway.catalog import model_card_for
from cluster.gateway.openai.encode import model_card
from cluster.gateway.replica import GatewaySettings, router_knobs
from cluster.gateway.routing import FastestRouter, RoundRobinRouter, make_router
from cluster.types import ModelName, ModelTraits, NodeId, NodeState, NodeTable, NodeView
from node_agent.types import CONSTRAINTS, LOGPROBS, REASONING, TOOLS

DEMO = ModelName("demo")


def test_affinity_can_be_turned_off_for_fastest_only() -> None:
    on = make_router("fastest", **router_knobs(GatewaySettings()))
    off = make_router("fastest", **router_knobs(GatewaySettings(affinity=False)))
    assert isinstance(on, FastestRouter) and on.affinity is not None
    assert isinstance(off, FastestRouter) and off.affinity is None
    # The other policies keep no affinity; the switch must not break them.
    rr = make_router(
        "round-robin", **router_knobs(GatewaySettings(routing="round-robin", affinity=False))
    )
    assert isinstance(rr, RoundRobinRouter)


def test_model_card_lists_what_the_ready_nodes_serving_it_advertise() -> None:
    def view(
        node_id: str, engine: str, caps: frozenset[str], state: NodeState, ctx: int = 32768
    ) -> NodeView:
        return NodeView(
            node_id=NodeId(node_id),
            name=node_id,
            address=node_id,
            engines=(engine,),
            state=state,
            models=(DEMO, ModelName("other")),
            traits=(
                (DEMO, ModelTraits(capabilities=caps, context_length=ctx, engine=engine)),
                (ModelName("other"), ModelTraits(engine=engine)),
            ),
        )

    table = NodeTable(
        version=1,
        nodes=(
            view("mac", "mlx", frozenset({TOOLS, REASONING}), NodeState.READY),
            view("gpu", "vllm", frozenset({TOOLS, CONSTRAINTS, LOGPROBS}), NodeState.READY, 8192),
            view("old", "llama", frozenset({"vision"}), NodeState.DRAINING),
        ),
    )
    card = model_card_for(table, DEMO, created=5)
    assert Model.model_validate(card).id == "demo"
    assert card["capabilities"] == ["constraints", "logprobs", "reasoning", "tools"]
    assert card["engines"] == ["mlx", "vllm"]
    assert card["context_length"] == 8192  # what every ready node can take
    other = model_card_for(table, ModelName("other"), created=5)
    assert other["capabilities"] == [] and other["engines"] == ["mlx", "vllm"]
    assert model_card("demo", created=5, context_length=4096)["context_length"] == 4096
    assert "usd_per_mtok" not in card  # nothing served yet: no figure rather than a made-up one
    assert model_card_for(table, DEMO, created=5, usd_per_mtok=0.0123)["usd_per_mtok"] == 0.0123
