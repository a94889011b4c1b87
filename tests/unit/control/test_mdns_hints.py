"""mDNS is a hint: an unauthenticated packet can add a place to try, never end an authenticated
node's stream, grow the controller's state without bound, or take a TLS node's id."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from cluster.control.config import ControllerConfig
from cluster.control.controller import Controller
from cluster.control.discovery import NAME_LIMIT, Sighting, clean_name
from cluster.control.node_sessions import CLAIMS_TLS_ID
from cluster.node_client import PLAINTEXT_REASON, NodeDescription, NodeUnauthenticated
from cluster.types import NodeState
from tests.fakes import FakeClient, FakeNode

REAL = "real._meterless._tcp.local."


class PlaintextOnly(FakeClient):
    """A TLS client to an agent that speaks only plaintext."""

    async def describe(self, timeout: float = 5.0) -> NodeDescription:
        raise NodeUnauthenticated(f"{self.address}: {PLAINTEXT_REASON}")


def controller(
    tls: dict[str, FakeNode],
    plain: dict[str, FakeNode] | None = None,
    **knobs: float | bool,
) -> Controller:
    """A controller without peers or a browser: the test plays mDNS. Addresses in `tls` answer
    over TLS, those in `plain` only in plaintext (which the admin allows unless told not to)."""
    plain = plain or {}

    def secure(address: str) -> FakeClient:
        if address in tls:
            return FakeClient(tls[address], address)
        return PlaintextOnly(plain[address], address)

    config = ControllerConfig(
        mdns=False,
        retry_min_s=0.05,
        retry_max_s=0.1,
        tick_s=0.02,
        status_interval_ms=20,
        plaintext_agents=knobs.pop("plaintext_agents", True),
        **knobs,  # type: ignore[arg-type]
    )
    plaintext: Callable[[str], FakeClient] = lambda a: FakeClient(plain[a], a)  # noqa: E731
    return Controller(config, client_factory=secure, plaintext_factory=plaintext)  # type: ignore[arg-type]


def sighting(key: str, *addresses: str) -> Sighting:
    """What the browser reports for an announcement of `key` at `addresses`."""
    return Sighting(key=key, addresses=addresses)


def states(c: Controller) -> dict[str, tuple[NodeState, str]]:
    """Each node's state and address, by id."""
    return {n.node_id: (n.state, n.address) for n in c.table().nodes}


async def until(predicate: Callable[[], bool], what: str) -> None:
    """Wait (a few seconds at most) until `predicate` holds."""
    for _ in range(250):
        if predicate():
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"waited in vain for {what}")


def test_names_lose_control_characters_and_are_cut() -> None:
    assert clean_name("node\x1b]0;owned\x07\n\x00-1") == "node]0;owned-1"
    assert clean_name("x" * 10_000) == "x" * (NAME_LIMIT - 1) + "…"
    assert clean_name("büro-mac") == "büro-mac"


@pytest.mark.timeout(10)
async def test_a_goodbye_for_a_streaming_node_is_ignored_and_one_for_a_gone_node_is_not() -> None:
    node = FakeNode("real")
    c = controller({"10.0.0.1:1": node})
    await c.start()
    try:
        c.node_sessions.seen(sighting(REAL, "10.0.0.1:1"))
        await until(lambda: states(c).get("real", (None,))[0] is NodeState.READY, "ready")
        c.node_sessions.gone(REAL)  # spoofed: the node is still streaming
        await asyncio.sleep(0.3)
        assert states(c)["real"][0] is NodeState.READY
        assert [s["source"] for s in c.sessions()] == [REAL]

        node.up = False  # now it really went: its stream broke
        await until(lambda: states(c)["real"][0] is NodeState.LOST, "lost")
        c.node_sessions.gone(REAL)
        assert c.sessions() == []
    finally:
        await c.stop()


@pytest.mark.timeout(10)
async def test_a_reannouncement_elsewhere_does_not_cut_a_streaming_node() -> None:
    c = controller({"10.0.0.1:1": FakeNode("real"), "10.0.0.66:1": FakeNode("evil")})
    await c.start()
    try:
        c.node_sessions.seen(sighting(REAL, "10.0.0.1:1"))
        await until(lambda: "real" in states(c), "the node")
        c.node_sessions.seen(sighting(REAL, "10.0.0.66:1"))
        await asyncio.sleep(0.3)
        assert states(c) == {"real": (NodeState.READY, "10.0.0.1:1")}
    finally:
        await c.stop()


@pytest.mark.timeout(10)
async def test_mdns_sources_are_capped_and_peers_are_not() -> None:
    nodes = {f"10.0.0.{i}:1": FakeNode(f"n{i}") for i in range(4)}
    c = controller(nodes, max_mdns_sources=2)
    await c.start()
    try:
        for i in range(3):
            c.node_sessions.seen(sighting(f"n{i}._meterless._tcp.local.", f"10.0.0.{i}:1"))
        c.node_sessions.seen(Sighting(key="peer:10.0.0.3:1", addresses=("10.0.0.3:1",), via="peer"))
        await until(lambda: len(states(c)) == 3, "three nodes")
        await asyncio.sleep(0.2)
        assert sorted(states(c)) == ["n0", "n1", "n3"]
    finally:
        await c.stop()


@pytest.mark.timeout(10)
async def test_a_rejected_mdns_source_is_forgotten_with_its_stand_in() -> None:
    rogue = FakeNode("rogue")
    c = controller({}, {"10.0.0.66:1": rogue}, mdns_forget_s=0.5, plaintext_agents=False)
    await c.start()
    try:
        c.node_sessions.seen(sighting("evil._meterless._tcp.local.", "10.0.0.66:1"))
        await until(lambda: "rejected@10.0.0.66:1" in states(c), "the stand-in")
        await until(lambda: not states(c) and not c.sessions(), "the source to be forgotten")
    finally:
        await c.stop()


@pytest.mark.timeout(10)
async def test_a_plaintext_agent_cannot_take_the_id_of_a_node_seen_over_tls() -> None:
    c = controller({"10.0.0.1:1": FakeNode("real")}, {"10.0.0.66:1": FakeNode("real")})
    await c.start()
    try:
        c.node_sessions.seen(sighting(REAL, "10.0.0.1:1"))
        await until(lambda: "real" in states(c), "the real node")
        c.node_sessions.seen(sighting("evil._meterless._tcp.local.", "10.0.0.66:1"))
        await until(lambda: "rejected@10.0.0.66:1" in states(c), "the impostor rejected")
        await asyncio.sleep(0.2)
        nodes = {n.node_id: n for n in c.table().nodes}
        assert (nodes["real"].state, nodes["real"].address) == (NodeState.READY, "10.0.0.1:1")
        assert not nodes["real"].plaintext
        assert nodes["rejected@10.0.0.66:1"].reason == CLAIMS_TLS_ID
    finally:
        await c.stop()
