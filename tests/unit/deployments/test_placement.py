"""Placement with fixtures: heterogeneous nodes, too-large models, pins, disk, spread and pack."""

from __future__ import annotations

from cluster.deployments.placement import (
    GIB,
    MIB,
    DeploymentSpec,
    ModelSize,
    NodeSlot,
    PlacementSettings,
    estimate,
    place,
)

SETTINGS = PlacementSettings(
    budget_fraction=0.8, overhead_bytes={"mlx": 256 * MIB, "vllm": 1 * GIB}
)
SMALL = ModelSize(weights_bytes=2 * GIB, kv_bytes_per_token=64 * 1024, context_length=4096)
BIG = ModelSize(weights_bytes=40 * GIB, kv_bytes_per_token=256 * 1024, context_length=8192)


def node(name: str, gib: int, *, engines: tuple[str, ...] = ("mlx",), **kw: object) -> NodeSlot:
    return NodeSlot(
        node_id=f"id-{name}", name=name, engines=engines, memory_total_bytes=gib * GIB, **kw
    )  # type: ignore[arg-type]


def spec(name: str = "qwen", **kw: object) -> DeploymentSpec:
    return DeploymentSpec(name=name, model=kw.pop("model", f"org/{name}"), **kw)  # type: ignore[arg-type]


def test_estimate_counts_weights_kv_for_context_times_concurrency_and_overhead() -> None:
    s = spec(context_length=2048, concurrency=4)
    assert estimate(s, SMALL, 256 * MIB) == 2 * GIB + 64 * 1024 * 2048 * 4 + 256 * MIB
    assert estimate(spec(), SMALL, 0) == 2 * GIB + 64 * 1024 * 4096  # the model's own context


def test_a_model_too_large_for_any_node_names_the_numbers() -> None:
    nodes = [node("mini", 16), node("studio", 48)]
    result = place([spec("big")], {"big": BIG}, nodes, {}, SETTINGS)
    assert result.assignments["big"] == ()
    (why,) = result.unplaced
    assert why.replica == 1
    # 40 GiB weights + 2 GiB KV + 0.25 GiB overhead > 38.4 GiB budget of the 48 GiB studio.
    assert "needs 42.25 GiB" in why.reason and "weights 40.00 GiB" in why.reason
    assert "studio" in why.reason and "38.40 GiB" in why.reason and "48.00 GiB" in why.reason


def test_heterogeneous_nodes_the_big_model_goes_where_it_fits() -> None:
    nodes = [node("mini", 16), node("studio", 64), node("gpu", 24, engines=("vllm",))]
    result = place([spec("big"), spec("small")], {"big": BIG, "small": SMALL}, nodes, {}, SETTINGS)
    assert result.assignments["big"] == ("id-studio",)
    # Pack: the small model joins the big one on the studio (8.95 GiB left there) rather than
    # taking the emptier mini (12.8 GiB), which stays free for another model.
    assert result.assignments["small"] == ("id-studio",)
    assert not result.unplaced


def test_replicas_spread_over_nodes_and_the_extra_ones_say_why() -> None:
    nodes = [node("a", 16), node("b", 16)]
    result = place([spec(replicas=3)], {"qwen": SMALL}, nodes, {}, SETTINGS)
    assert sorted(result.assignments["qwen"]) == ["id-a", "id-b"]
    (extra,) = result.unplaced
    assert extra.replica == 3 and "already holds one" in extra.reason


def test_prefers_a_node_with_the_model_on_disk() -> None:
    nodes = [node("a", 16), node("b", 32, on_disk=frozenset({"org/qwen"}))]
    result = place([spec()], {"qwen": SMALL}, nodes, {}, SETTINGS)
    assert result.assignments["qwen"] == ("id-b",)


def test_pinned_nodes_only_and_an_unknown_pin_is_named() -> None:
    nodes = [node("a", 16), node("b", 16)]
    result = place([spec(nodes=("id-b",))], {"qwen": SMALL}, nodes, {}, SETTINGS)
    assert result.assignments["qwen"] == ("id-b",)
    result = place([spec(nodes=("id-zz",))], {"qwen": SMALL}, nodes, {}, SETTINGS)
    assert "id-zz" in result.unplaced[0].reason


def test_engine_is_respected() -> None:
    nodes = [node("mac", 64)]
    result = place([spec(engine="vllm")], {"qwen": SMALL}, nodes, {}, SETTINGS)
    assert result.assignments["qwen"] == ()
    assert "engine 'vllm'" in result.unplaced[0].reason


def test_a_replica_stays_where_it_is_loaded_or_was_placed() -> None:
    nodes = [
        node("a", 16),
        node("b", 64, on_disk=frozenset({"org/qwen"})),
        node("c", 16, loaded=frozenset({"qwen"})),
    ]
    assert place([spec()], {"qwen": SMALL}, nodes, {}, SETTINGS).assignments["qwen"] == ("id-c",)
    # The last placement wins over where it is loaded (a move in progress keeps its target).
    moved = place([spec()], {"qwen": SMALL}, nodes, {"qwen": ["id-a"]}, SETTINGS)
    assert moved.assignments["qwen"] == ("id-a",)


def test_unavailable_nodes_take_nothing_and_their_replicas_move() -> None:
    nodes = [node("a", 16, available=False, loaded=frozenset({"qwen"})), node("b", 16)]
    result = place([spec()], {"qwen": SMALL}, nodes, {"qwen": ["id-a"]}, SETTINGS)
    assert result.assignments["qwen"] == ("id-b",)


def test_memory_other_models_hold_counts_against_the_budget() -> None:
    nodes = [node("a", 16, other_bytes=12 * GIB), node("b", 16)]
    result = place([spec()], {"qwen": SMALL}, nodes, {}, SETTINGS)
    assert result.assignments["qwen"] == ("id-b",)


def test_replicas_of_several_models_share_a_node_budget() -> None:
    nodes = [node("a", 8)]  # 6.4 GiB budget: two 2.5 GiB replicas fit, a third does not
    specs = [spec("m1"), spec("m2"), spec("m3")]
    result = place(specs, dict.fromkeys(("m1", "m2", "m3"), SMALL), nodes, {}, SETTINGS)
    placed = [m for m, n in result.assignments.items() if n]
    assert len(placed) == 2 and len(result.unplaced) == 1


def test_unknown_size_is_a_reason_not_a_guess() -> None:
    result = place([spec()], {"qwen": None}, [node("a", 16)], {}, SETTINGS)
    assert "unknown" in result.unplaced[0].reason


def test_undeployed_specs_place_nothing() -> None:
    result = place([spec(replicas=0)], {"qwen": SMALL}, [node("a", 16)], {}, SETTINGS)
    assert "qwen" not in result.assignments and not result.unplaced


def test_a_node_where_the_model_crash_looped_is_avoided() -> None:
    nodes = [node("a", 16, loaded=frozenset()), node("b", 16)]
    result = place(
        [spec()],
        {"qwen": SMALL},
        nodes,
        {"qwen": ["id-a"]},
        SETTINGS,
        avoid=frozenset({("id-a", "qwen")}),
    )
    assert result.assignments["qwen"] == ("id-b",)
    alone = place(
        [spec()], {"qwen": SMALL}, nodes[:1], {}, SETTINGS, avoid=frozenset({("id-a", "qwen")})
    )
    assert "kept failing on a" in alone.unplaced[0].reason
