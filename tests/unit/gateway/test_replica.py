"""The gateway replica (gateway/replica.py): how its settings become a routing policy."""

from __future__ import annotations

from cluster.gateway.replica import GatewaySettings, router_knobs
from cluster.gateway.routing import FastestRouter, RoundRobinRouter, make_router


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
