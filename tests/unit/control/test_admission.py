"""Admission: handshake failures become rejections, another protocol major is incompatible;
neither is ever routable."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import stat
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from zeroconf.asyncio import AsyncServiceInfo

from cluster.access import secret_store
from cluster.control.config import ControllerConfig
from cluster.control.controller import Controller
from cluster.control.discovery import SERVICE_TYPE, Sighting, sighting_from_info
from cluster.control.inventory import (
    Inventory,
    NodeDescribed,
    NodeGone,
    NodeRefused,
    NodeSeen,
    StatusReceived,
)
from cluster.gateway.clients import ClientPool
from cluster.gateway.forward import RETRYABLE
from cluster.node_client import (
    PLAINTEXT_REASON,
    WRONG_SECRET_REASON,
    NodeDescription,
    NodeStatusSample,
    NodeUnauthenticated,
    NodeUnavailable,
    handshake_failure,
)
from cluster.types import PROTOCOL_VERSION, NodeId, NodeState
from node_agent.trust import ClusterSecret
from tests.fakes import FakeClient, FakeNode

# What gRPC 1.x says, verbatim, when the handshake fails (seen against real agents).
PLAIN_AGENT = (
    "failed to connect to all addresses; last error: UNKNOWN: ipv4:127.0.0.1:5: Tls "
    "handshake failed (TSI_PROTOCOL_FAILURE): SSL_ERROR_SSL: error:100000f7:SSL "
    "routines:OPENSSL_internal:WRONG_VERSION_NUMBER: Invalid certificate verification"
)
OTHER_SECRET = (
    "failed to connect to all addresses; last error: UNKNOWN: ipv4:127.0.0.1:5: Tls "
    "handshake failed (TSI_PROTOCOL_FAILURE): SSL_ERROR_SSL: error:1000007d:SSL "
    "routines:OPENSSL_internal:CERTIFICATE_VERIFY_FAILED: self signed certificate"
)
REFUSED = (
    "failed to connect to all addresses; last error: UNKNOWN: ipv4:127.0.0.1:1: "
    "Failed to connect to remote host: Connection refused"
)


def test_handshake_failures_are_told_apart_from_a_node_that_is_away() -> None:
    assert handshake_failure(PLAIN_AGENT) == PLAINTEXT_REASON
    assert handshake_failure(OTHER_SECRET) == WRONG_SECRET_REASON
    assert handshake_failure(REFUSED) is None
    assert handshake_failure("Deadline Exceeded") is None


def test_a_refused_node_is_rejected_until_it_reports_status() -> None:
    inv = Inventory()
    node = NodeId("rogue")
    inv.apply(NodeSeen(node_id=node, address="10.0.0.9:1", via="mdns", at=0.0))
    inv.apply(
        NodeRefused(
            node_id=node, address="10.0.0.9:1", reason=WRONG_SECRET_REASON, at=1.0, name="evil"
        )
    )
    view = inv.table(2.0).nodes[0]
    assert (view.state, view.reason, view.name, view.routable) == (
        NodeState.REJECTED,
        WRONG_SECRET_REASON,
        "evil",
        False,
    )
    inv.apply(StatusReceived(node_id=node, at=3.0, address="10.0.0.9:1"))  # restarted with token
    view = inv.table(3.0).nodes[0]
    assert (view.state, view.reason, view.routable) == (NodeState.READY, "", True)


def test_a_refusal_after_status_wins_and_a_late_old_one_does_not() -> None:
    inv = Inventory()
    node = NodeId("n")
    inv.apply(StatusReceived(node_id=node, at=1.0, address="a:1"))
    inv.apply(NodeRefused(node_id=node, address="a:1", reason="x", at=2.0))
    assert inv.table(2.0).nodes[0].state is NodeState.REJECTED
    inv.apply(NodeRefused(node_id=node, address="a:1", reason="old", at=0.5))
    assert inv.table(2.0).nodes[0].reason == "x"


def test_a_stand_in_for_a_refused_peer_goes_once_it_is_admitted_there() -> None:
    inv = Inventory()
    inv.apply(
        NodeRefused(
            node_id=NodeId("rejected@10.0.0.9:1"),
            address="10.0.0.9:1",
            reason=WRONG_SECRET_REASON,
            at=1.0,
        )
    )
    inv.apply(
        NodeRefused(
            node_id=NodeId("rejected@10.0.0.8:1"),
            address="10.0.0.8:1",
            reason=WRONG_SECRET_REASON,
            at=1.0,
        )
    )
    inv.apply(NodeSeen(node_id=NodeId("real"), address="10.0.0.9:1", via="peer", at=2.0))
    assert [n.node_id for n in inv.table(2.0).nodes] == ["real", "rejected@10.0.0.8:1"]


def test_a_rejected_node_that_says_goodbye_is_lost() -> None:
    inv = Inventory()
    node = NodeId("rogue")
    inv.apply(NodeRefused(node_id=node, address="a:1", reason="x", at=1.0))
    inv.apply(NodeGone(node_id=node, at=2.0))
    view = inv.table(2.0).nodes[0]
    assert (view.state, view.reason) == (NodeState.LOST, "")


class GuardedClient(FakeClient):
    """A TLS client to a node that fails the handshake the way `refusal` says."""

    def __init__(self, node: FakeNode, address: str, refusal: str) -> None:
        super().__init__(node, address)
        self.refusal = refusal

    async def describe(self, timeout: float = 5.0) -> NodeDescription:
        """Fail as gRPC's handshake failure is translated (or as a node that is away)."""
        if not self.node.up:
            raise NodeUnavailable(f"{self.address}: connection refused")
        raise NodeUnauthenticated(f"{self.address}: {self.refusal}")


def controller(
    refusal: str, *, plaintext_agents: bool, node: FakeNode | None = None
) -> tuple[Controller, list[str]]:
    """A controller with one peer that fails TLS; also returns the plaintext addresses dialled."""
    node, dialled = node or FakeNode("rogue"), []

    def plaintext(address: str) -> FakeClient:
        dialled.append(address)
        return FakeClient(node, address)

    config = ControllerConfig(
        peers=("10.0.0.9:1",),
        mdns=False,
        retry_min_s=0.05,
        retry_max_s=0.1,
        tick_s=0.02,
        plaintext_agents=plaintext_agents,
    )
    c = Controller(
        config,
        client_factory=lambda a: GuardedClient(node, a, refusal),  # type: ignore[arg-type, return-value]
        plaintext_factory=plaintext,
    )  # type: ignore[arg-type]
    return c, dialled


async def settled(c: Controller) -> list[tuple[str, NodeState, str, bool]]:
    """The nodes once the first table is out and a few retries have happened."""
    await c.start()
    try:
        await c.wait_table(0)
        await asyncio.sleep(0.3)
        return [(n.name, n.state, n.reason, n.plaintext) for n in c.table().nodes]
    finally:
        await c.stop()


@pytest.mark.timeout(10)
async def test_a_plaintext_agent_is_rejected_under_the_name_it_gives() -> None:
    c, _ = controller(PLAINTEXT_REASON, plaintext_agents=False)
    assert await settled(c) == [("rogue", NodeState.REJECTED, PLAINTEXT_REASON, False)]
    assert c.sessions()[0]["rejected"] == PLAINTEXT_REASON


@pytest.mark.timeout(10)
async def test_a_plaintext_agent_is_admitted_in_plaintext_only_when_allowed() -> None:
    c, dialled = controller(PLAINTEXT_REASON, plaintext_agents=True)
    assert await settled(c) == [("rogue", NodeState.READY, "", True)]
    assert dialled and set(dialled) == {"10.0.0.9:1"}


@pytest.mark.timeout(10)
async def test_an_agent_with_another_secret_is_rejected_even_when_plaintext_is_allowed() -> None:
    c, dialled = controller(WRONG_SECRET_REASON, plaintext_agents=True)
    assert await settled(c) == [
        ("rejected@10.0.0.9:1", NodeState.REJECTED, WRONG_SECRET_REASON, False)
    ]
    assert dialled == []  # it speaks TLS: nothing is sent to it in clear


def test_the_secret_is_created_once_owner_only(tmp_path: Path) -> None:
    config = tmp_path / "config"
    first, created = secret_store.load_or_create(config)
    again, created_again = secret_store.load_or_create(config)
    assert created and not created_again and first == again
    assert stat.S_IMODE((config / secret_store.FILE_NAME).stat().st_mode) == 0o600
    assert stat.S_IMODE(config.stat().st_mode) == 0o700


def test_a_secret_file_others_can_read_is_refused(tmp_path: Path) -> None:
    secret_store.load_or_create(tmp_path)
    os.chmod(tmp_path / secret_store.FILE_NAME, 0o644)
    with pytest.raises(secret_store.SecretFileError, match="chmod 600"):
        secret_store.load(tmp_path)


def test_an_unwritable_config_dir_is_one_readable_line(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    with pytest.raises(secret_store.SecretFileError, match="cannot create the cluster secret"):
        secret_store.load_or_create(tmp_path / "file" / "config")  # a file where a dir must be


def test_a_missing_or_garbled_secret_file_is_one_readable_line(tmp_path: Path) -> None:
    with pytest.raises(secret_store.SecretFileError, match="run `cluster up` first"):
        secret_store.load(tmp_path)
    path = tmp_path / secret_store.FILE_NAME
    path.write_text("not hex\n")
    os.chmod(path, 0o600)
    with pytest.raises(secret_store.SecretFileError, match="does not hold a cluster secret"):
        secret_store.load(tmp_path)


@pytest.mark.timeout(10)
async def test_a_rogue_claiming_a_real_nodes_id_is_listed_apart() -> None:
    c, _ = controller(WRONG_SECRET_REASON, plaintext_agents=False)
    await c.start()
    try:
        c.node_sessions.seen(
            Sighting(
                key="evil._meterless._tcp.local.",
                addresses=("10.0.0.7:1",),
                node_id="the-real-node",
            )
        )  # what its mDNS TXT claims
        await asyncio.sleep(0.3)
        ids = {n.node_id: n.state for n in c.table().nodes}
    finally:
        await c.stop()
    assert ids == {
        "rejected@10.0.0.9:1": NodeState.REJECTED,
        "rejected@10.0.0.7:1": NodeState.REJECTED,
    }


@pytest.mark.timeout(10)
async def test_a_rejected_node_that_goes_away_is_lost_and_rejected_again_if_it_returns() -> None:
    rogue = FakeNode("rogue")
    c, _ = controller(WRONG_SECRET_REASON, plaintext_agents=False, node=rogue)
    await c.start()
    try:
        await c.wait_table(0)
        assert [n.state for n in c.table().nodes] == [NodeState.REJECTED]
        rogue.up = False
        await asyncio.sleep(0.4)
        assert [(n.state, n.reason) for n in c.table().nodes] == [(NodeState.LOST, "")]
        rogue.up = True
        await asyncio.sleep(0.4)
        assert [n.state for n in c.table().nodes] == [NodeState.REJECTED]
    finally:
        await c.stop()


async def test_the_gateway_pool_dials_plaintext_only_for_nodes_admitted_so() -> None:
    secret = ClusterSecret(bytes(range(32)))
    pool = ClientPool(secret=secret)
    tls, plain = pool.get("127.0.0.1:9"), pool.get("127.0.0.1:9", plaintext=True)
    assert tls is not plain and pool.get("127.0.0.1:9") is tls
    assert (tls._secret, plain._secret) == (secret, None)
    await pool.retain({"127.0.0.1:9"})
    assert pool.get("127.0.0.1:9", plaintext=True) is plain  # kept while the node is listed
    await pool.retain(set())
    assert pool.get("127.0.0.1:9", plaintext=True) is not plain
    await pool.retain(set())


def test_a_node_that_stops_proving_the_secret_is_failed_over() -> None:
    assert issubclass(NodeUnauthenticated, RETRYABLE)


# -- version skew: an agent of another protocol major is listed, never routed to --------------


def test_a_node_of_another_protocol_major_is_incompatible_with_both_versions() -> None:
    inv = Inventory()
    node = NodeId("future")
    inv.apply(NodeSeen(node_id=node, address="10.0.0.9:1", via="peer", at=0.0))
    inv.apply(
        NodeDescribed(
            node_id=node, name="future", agent_version="9.0.0", protocol_version="2.0", at=1.0
        )
    )
    view = inv.table(2.0).nodes[0]
    assert (view.state, view.routable, view.agent_version, view.protocol_version) == (
        NodeState.INCOMPATIBLE,
        False,
        "9.0.0",
        "2.0",
    )
    assert view.reason == f"agent 9.0.0 speaks protocol 2.0, this head speaks {PROTOCOL_VERSION}"


def test_a_node_downgraded_to_our_major_serves_again_and_a_newer_minor_is_fine() -> None:
    inv = Inventory()
    node = NodeId("n")
    inv.apply(NodeDescribed(node_id=node, name="n", protocol_version="2.0", at=1.0))
    inv.apply(StatusReceived(node_id=node, at=2.0, address="a:1"))
    assert inv.table(2.0).nodes[0].state is NodeState.INCOMPATIBLE  # what it said last counts
    inv.apply(
        NodeDescribed(node_id=node, name="n", agent_version="1.9", protocol_version="1.7", at=3.0)
    )
    view = inv.table(3.0).nodes[0]
    assert (view.state, view.reason, view.agent_version) == (NodeState.READY, "", "1.9")


class FutureClient(FakeClient):
    """A client to an agent that proves the secret but speaks protocol 2.0."""

    streams = 0

    async def describe(self, timeout: float = 5.0) -> NodeDescription:
        """What a newer agent says of itself."""
        desc = await super().describe(timeout)
        return dataclasses.replace(desc, agent_version="9.0.0", protocol_version="2.0")

    async def watch_status(self, interval_ms: int = 0) -> AsyncIterator[NodeStatusSample]:
        """Count the streams opened: an incompatible node must get none."""
        FutureClient.streams += 1
        async for sample in super().watch_status(interval_ms):
            yield sample


@pytest.mark.timeout(10)
async def test_a_peer_of_another_protocol_major_is_listed_as_incompatible_and_not_watched() -> None:
    node = FakeNode("future")
    config = ControllerConfig(
        peers=("10.0.0.9:1",), mdns=False, retry_min_s=0.05, retry_max_s=0.1, tick_s=0.02
    )
    c = Controller(
        config,
        client_factory=lambda a: FutureClient(node, a),  # type: ignore[arg-type, return-value]
        plaintext_factory=lambda a: FutureClient(node, a),  # type: ignore[arg-type, return-value]
    )
    FutureClient.streams = 0
    reason = f"agent 9.0.0 speaks protocol 2.0, this head speaks {PROTOCOL_VERSION}"
    assert await settled(c) == [("future", NodeState.INCOMPATIBLE, reason, False)]
    assert FutureClient.streams == 0
    assert c.sessions()[0]["incompatible"] == "2.0"


def test_mdns_passes_on_an_agent_of_another_major_for_its_session_to_describe() -> None:
    def info(txt: dict[str, str]) -> AsyncServiceInfo:
        return AsyncServiceInfo(
            SERVICE_TYPE,
            f"n.{SERVICE_TYPE}",
            port=50151,
            properties=txt,
            parsed_addresses=["10.0.0.9"],
        )

    seen = sighting_from_info(info({"proto": "2.0", "node_id": "n"}))
    assert seen is not None and seen.addresses == ("10.0.0.9:50151",)
    assert sighting_from_info(info({"node_id": "n"})) is None  # says no protocol: not an agent
