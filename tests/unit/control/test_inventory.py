"""Node state derived from observations, at fixed times."""

from __future__ import annotations

import pytest

from cluster.control.inventory import (
    DrainSet,
    Inventory,
    ModelCounters,
    NodeDescribed,
    NodeGone,
    NodeSeen,
    NodeUnreachable,
    StatusReceived,
    StreamBroken,
    only_measured,
)
from cluster.throughput import INITIAL_TPS
from cluster.types import CostProfile, ModelName, NodeId, NodeState, NodeView

N = NodeId("n1")
M = ModelName("demo")
MDNS, PEER = "10.0.0.5:50151", "mini.local:50151"


def status(
    at: float,
    address: str = MDNS,
    tokens: int = 0,
    busy: float = 0.0,
    running: int = 0,
    node_id: NodeId = N,
) -> StatusReceived:
    counters = ModelCounters(model=M, running=running, generated_tokens=tokens, busy_seconds=busy)
    return StatusReceived(
        node_id=node_id, at=at, models=(counters,), memory_used_bytes=1 << 30, address=address
    )


def joined(at: float = 0.0) -> Inventory:
    inv = Inventory()
    inv.apply(NodeSeen(node_id=N, address=MDNS, via="mdns", at=at))
    inv.apply(
        NodeDescribed(
            node_id=N,
            name="mini",
            engines=("mlx",),
            accelerator="Apple M4",
            memory_total_bytes=16 << 30,
            cost=CostProfile(price_usd=599),
            at=at,
        )
    )
    return inv


def only(inv: Inventory, now: float) -> NodeView:
    (view,) = inv.table(now).nodes
    return view


def test_joining_until_first_status_then_ready() -> None:
    inv = joined()
    view = only(inv, 0.0)
    assert view.state is NodeState.JOINING and not view.routable
    assert (view.name, view.address, view.accelerator) == ("mini", MDNS, "Apple M4")
    inv.apply(status(0.5))
    view = only(inv, 0.5)
    assert view.state is NodeState.READY and view.models == (M,)
    assert view.memory_used_bytes == 1 << 30 and view.cost.price_usd == 599


def test_lost_after_grace_and_ready_again_on_status() -> None:
    inv = joined()
    inv.apply(status(1.0))
    inv.apply(StreamBroken(node_id=N, at=1.2, reason="unavailable"))
    assert only(inv, 4.1).state is NodeState.READY  # within the 3 s grace
    assert only(inv, 4.2).state is NodeState.LOST
    inv.apply(status(9.0))
    assert only(inv, 9.0).state is NodeState.READY


def test_break_then_failed_reconnect_is_lost_at_once() -> None:
    inv = joined()
    inv.apply(status(1.0))
    inv.apply(StreamBroken(node_id=N, at=1.1))
    inv.apply(NodeUnreachable(node_id=N, at=1.4))
    assert only(inv, 1.4).state is NodeState.LOST  # no 3 s grace: it did not come back
    inv.apply(status(3.0))
    assert only(inv, 3.0).state is NodeState.READY
    inv.apply(StreamBroken(node_id=N, at=4.0))  # an old failure does not cut the next grace
    assert only(inv, 4.1).state is NodeState.READY


def test_unreachable_counts_only_after_a_break_nothing_has_followed() -> None:
    inv = joined()
    inv.apply(status(1.0))
    inv.apply(NodeUnreachable(node_id=N, at=1.5))  # another session failing; the stream lives
    assert only(inv, 1.5).state is NodeState.READY
    inv.apply(StreamBroken(node_id=N, at=2.0))
    inv.apply(status(2.1, address=PEER))  # a second stream delivers after the break
    inv.apply(NodeUnreachable(node_id=N, at=2.5))
    assert only(inv, 2.5).state is NodeState.READY


def test_break_followed_by_status_from_another_stream_is_not_lost() -> None:
    inv = joined()
    inv.apply(status(1.0))
    inv.apply(StreamBroken(node_id=N, at=1.1))
    inv.apply(status(1.2, address=PEER))
    assert only(inv, 5.0).state is NodeState.READY


def test_silent_stream_is_lost_too() -> None:
    inv = joined()
    inv.apply(status(1.0))
    assert only(inv, 10.9).state is NodeState.READY
    assert only(inv, 11.0).state is NodeState.LOST


def test_goodbye_is_lost_at_once_until_status_returns() -> None:
    inv = joined()
    inv.apply(status(1.0))
    inv.apply(NodeGone(node_id=N, at=2.0))
    assert only(inv, 2.0).state is NodeState.LOST
    inv.apply(status(2.5))
    assert only(inv, 2.5).state is NodeState.READY


def test_unknown_nodes_breaking_or_leaving_change_nothing() -> None:
    inv = Inventory()
    inv.apply(StreamBroken(node_id=N, at=1.0))
    inv.apply(NodeUnreachable(node_id=N, at=1.0))
    inv.apply(NodeGone(node_id=N, at=1.0))
    assert inv.table(1.0).nodes == ()


def test_one_node_under_two_addresses() -> None:
    inv = joined()
    inv.apply(NodeSeen(node_id=N, address=PEER, via="peer", at=0.1))
    inv.apply(status(1.0, address=PEER))
    assert only(inv, 1.0).address == PEER
    inv.apply(status(1.1, address=MDNS))  # both streams live: no flip-flopping
    assert only(inv, 1.1).address == PEER
    inv.apply(status(5.0, address=MDNS))  # the peer stream went quiet
    assert only(inv, 5.0).address == MDNS
    assert set(inv.addresses(N)) == {MDNS, PEER} and inv.addresses(N)[0] == MDNS


def test_broken_stream_hands_the_address_over_at_once() -> None:
    inv = joined()
    inv.apply(status(1.0, address=PEER))
    inv.apply(StreamBroken(node_id=N, at=1.1, address=PEER))
    inv.apply(status(1.2, address=MDNS))
    assert only(inv, 1.2).address == MDNS


def test_version_increments_only_on_change() -> None:
    inv = joined()
    first = inv.table(0.0)
    assert inv.table(0.5) is first  # time passed, nothing changed
    inv.apply(status(1.0))
    second = inv.table(1.0)
    assert second.version == first.version + 1
    inv.apply(status(2.0))  # same counters, same everything
    assert inv.table(2.0).version == second.version
    inv.apply(status(3.0, running=2))
    assert inv.table(3.0).version == second.version + 1
    assert inv.table(20.0).version == second.version + 2  # went silent: lost


def test_drain() -> None:
    inv = joined()
    inv.apply(status(1.0))
    inv.apply(DrainSet(node_id=N, draining=True))
    view = only(inv, 1.0)
    assert view.state is NodeState.DRAINING and not view.routable
    inv.apply(DrainSet(node_id=N, draining=False))
    assert only(inv, 1.0).state is NodeState.READY


def test_drain_set_before_the_node_appears_still_applies() -> None:
    inv = Inventory()
    inv.apply(DrainSet(node_id=N, draining=True))
    assert inv.table(0.0).nodes == ()
    inv.apply(status(1.0))
    assert only(inv, 1.0).state is NodeState.DRAINING


def test_lost_beats_draining() -> None:
    inv = joined()
    inv.apply(status(1.0))
    inv.apply(DrainSet(node_id=N, draining=True))
    inv.apply(NodeGone(node_id=N, at=1.5))
    assert only(inv, 1.5).state is NodeState.LOST


def test_decode_tps_measured_from_status() -> None:
    inv = joined()
    inv.apply(status(1.0))
    view = only(inv, 1.0)
    assert (view.decode_tps, view.tps_measured) == (INITIAL_TPS, False)
    inv.apply(status(3.0, tokens=300, busy=2.0, running=1))
    view = only(inv, 3.0)
    assert view.tps_measured and view.decode_tps == pytest.approx(150.0)
    assert view.running == 1


def test_busiest_model_sets_the_node_rate() -> None:
    inv = joined()
    big, small = ModelName("big"), ModelName("small")

    def both(at: float, big_counts: tuple[int, float], small_counts: tuple[int, float]) -> None:
        models = (
            ModelCounters(model=big, generated_tokens=big_counts[0], busy_seconds=big_counts[1]),
            ModelCounters(
                model=small, generated_tokens=small_counts[0], busy_seconds=small_counts[1]
            ),
        )
        inv.apply(StatusReceived(node_id=N, at=at, models=models, address=MDNS))

    both(0.0, (0, 0.0), (0, 0.0))
    both(10.0, (400, 8.0), (600, 2.0))  # big: 50 tok/s over 8 s, small: 300 tok/s over 2 s
    view = only(inv, 10.0)
    assert view.models == (big, small) and view.decode_tps == pytest.approx(50.0)


def test_unloaded_model_disappears() -> None:
    inv = joined()
    inv.apply(status(1.0))
    inv.apply(StatusReceived(node_id=N, at=2.0, models=(), address=MDNS))
    assert only(inv, 2.0).models == ()


def test_a_withdrawn_model_is_not_routed_to_until_restored() -> None:
    from cluster.control.inventory import ModelWithdrawn

    inv = Inventory()
    inv.apply(
        StatusReceived(
            node_id=N,
            at=0.0,
            models=(ModelCounters(model=ModelName("a")), ModelCounters(model=ModelName("b"))),
        )
    )
    inv.apply(ModelWithdrawn(node_id=N, model=ModelName("a"), withdrawn=True))
    assert inv.table(0.1).nodes[0].models == ("b",)
    inv.apply(ModelWithdrawn(node_id=N, model=ModelName("a"), withdrawn=False))
    assert inv.table(0.2).nodes[0].models == ("a", "b")


def test_only_measured_tells_load_and_rates_from_everything_else() -> None:
    inv = joined()
    inv.apply(status(1.0))
    first = inv.table(1.0)
    inv.apply(status(2.0, tokens=500, busy=1.0, running=4))
    busier = inv.table(2.0)
    assert busier.version != first.version and only_measured(first, busier)
    inv.apply(DrainSet(node_id=N, draining=True))
    drained = inv.table(2.0)
    assert not only_measured(busier, drained)
    inv.apply(StatusReceived(node_id=N, at=3.0, models=(), memory_used_bytes=1 << 30, address=MDNS))
    assert not only_measured(drained, inv.table(3.0))  # its model unloaded
    inv.apply(NodeSeen(node_id=NodeId("n2"), address="10.0.0.6:50151", via="mdns", at=4.0))
    assert not only_measured(drained, inv.table(4.0))  # a node more
