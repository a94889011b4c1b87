"""Rebalance planning from a skewed demand: the busy model goes to the fast node."""

from __future__ import annotations

from cluster.deployments.placement import (
    GIB,
    DeploymentSpec,
    ModelSize,
    NodeSlot,
    PlacementSettings,
)
from cluster.deployments.rebalance import Move, propose

SIZE = ModelSize(weights_bytes=4 * GIB, kv_bytes_per_token=0, context_length=4096)
S = PlacementSettings(budget_fraction=1.0, overhead_bytes={"mlx": 0})


def node(name: str, tps: float, gib: int = 16) -> NodeSlot:
    return NodeSlot(
        node_id=name, name=name, engines=("mlx",), memory_total_bytes=gib * GIB, tps=tps
    )


HOT = DeploymentSpec(name="hot", model="org/hot")
COLD = DeploymentSpec(name="cold", model="org/cold")
SIZES = {"hot": SIZE, "cold": SIZE}


def test_the_busiest_model_moves_to_the_fastest_node() -> None:
    nodes = [node("slow", 10), node("fast", 50)]
    moves = propose(
        [HOT, COLD],
        {"hot": ["slow"], "cold": ["fast"]},
        SIZES,
        nodes,
        {"hot": 9000, "cold": 100},
        settings=S,
    )
    assert [(m.model, m.from_node, m.to_node) for m in moves] == [("hot", "slow", "fast")]
    assert "9000 tokens" in moves[0].reason


def test_no_move_without_a_real_gain() -> None:
    nodes = [node("a", 40), node("b", 44)]
    assert propose([HOT], {"hot": ["a"]}, SIZES, nodes, {"hot": 9000}, settings=S) == []


def test_already_on_the_fastest_node_nothing_moves() -> None:
    nodes = [node("slow", 10), node("fast", 50)]
    assert propose([HOT], {"hot": ["fast"]}, SIZES, nodes, {"hot": 9000}, settings=S) == []


def test_idle_models_give_the_fast_memory_back() -> None:
    nodes = [node("slow", 10), node("fast", 50, gib=6)]  # room for one 4 GiB replica
    moves = propose(
        [HOT, COLD], {"hot": ["slow"], "cold": ["fast"]}, SIZES, nodes, {"hot": 9000}, settings=S
    )
    assert moves == [
        Move(model="cold", from_node="fast", to_node="slow", reason=moves[0].reason),
        Move(model="hot", from_node="slow", to_node="fast", reason=moves[1].reason),
    ]


def test_a_model_with_demand_is_not_evicted_for_another() -> None:
    nodes = [node("slow", 10), node("fast", 50, gib=6)]
    moves = propose(
        [HOT, COLD],
        {"hot": ["slow"], "cold": ["fast"]},
        SIZES,
        nodes,
        {"hot": 9000, "cold": 10},
        settings=S,
    )
    assert moves == []


def test_pinned_models_stay_put() -> None:
    pinned = DeploymentSpec(name="hot", model="org/hot", nodes=("slow",))
    nodes = [node("slow", 10), node("fast", 50)]
    assert propose([pinned], {"hot": ["slow"]}, SIZES, nodes, {"hot": 9000}, settings=S) == []


def test_demand_and_speed_from_the_ledger_rows() -> None:
    from cluster.deployments.rebalance import demand_by_model, tps_by_node

    models = [
        {"model": "hot", "completion_tokens": 900},
        {"model": "cold", "completion_tokens": None},
    ]
    assert demand_by_model(models) == {"hot": 900.0, "cold": 0.0}
    nodes = [
        {"node": "a", "requests": 10, "mean_duration_s": 2.0, "completion_tokens": 400},
        {"node": "b", "requests": 0, "mean_duration_s": None, "completion_tokens": 0},
        {"node": None, "requests": 3, "mean_duration_s": 1.0, "completion_tokens": 0},
    ]
    assert tps_by_node(nodes) == {"a": 20.0}
