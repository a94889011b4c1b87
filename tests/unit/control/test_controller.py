"""The controller against fake node clients: its first table, and a node that does not come back."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from cluster.control.config import ControllerConfig
from cluster.control.controller import Controller
from cluster.types import NodeState, NodeTable
from tests.fakes import FakeClient, FakeNode


def controller(nodes: dict[str, FakeNode], **knobs: float) -> Controller:
    """A controller whose peers are `nodes` (by address), with fast retries."""
    config = ControllerConfig(
        peers=tuple(nodes), mdns=False, retry_min_s=0.05, retry_max_s=0.1, tick_s=0.02, **knobs
    )
    return Controller(config, client_factory=lambda a: FakeClient(nodes[a], a))  # type: ignore[arg-type, return-value]


def states(table: NodeTable) -> dict[str, NodeState]:
    """Each node's state, by name."""
    return {n.name: n.state for n in table.nodes}


@pytest.mark.timeout(10)
async def test_first_table_waits_until_every_node_is_discovered() -> None:
    nodes = {"a:1": FakeNode("a"), "b:1": FakeNode("b", describe_s=0.5)}
    c = controller(nodes)
    await c.start()
    try:
        table = await c.wait_table(0)  # b is slow to answer: without waiting, only a is here
        assert states(table) == {"a": NodeState.READY, "b": NodeState.READY}
    finally:
        await c.stop()


@pytest.mark.timeout(10)
async def test_first_table_waits_no_longer_than_settle_max_s() -> None:
    nodes = {"a:1": FakeNode("a"), "b:1": FakeNode("b", describe_s=30)}
    c = controller(nodes, settle_max_s=0.3)
    await c.start()
    try:
        assert states(await c.wait_table(0)) == {"a": NodeState.READY}
    finally:
        await c.stop()


@pytest.mark.timeout(10)
async def test_a_node_that_cannot_be_reconnected_is_lost_at_once() -> None:
    node = FakeNode("a")
    c = controller({"a:1": node})
    await c.start()
    try:
        table = await c.wait_table(0)
        assert states(table) == {"a": NodeState.READY}
        node.up = False  # killed: the stream breaks, reconnecting is refused
        async with asyncio.timeout(1.5):  # well inside the 3 s grace a reconnect would get
            while states(table)["a"] is not NodeState.LOST:
                table = await c.wait_table(table.version, timeout_s=2.0)
        node.up = True
        while states(table)["a"] is not NodeState.READY:
            table = await c.wait_table(table.version, timeout_s=2.0)
    finally:
        await c.stop()


@pytest.mark.timeout(10)
async def test_a_silent_stream_is_found_out_long_before_the_backstop() -> None:
    node = FakeNode("a")
    c = controller({"a:1": node}, status_silence_s=0.3, describe_timeout_s=0.3)
    await c.start()
    try:
        table = await c.wait_table(0)
        assert states(table) == {"a": NodeState.READY}  # else LOST below would prove nothing
        node.link.clear()  # no reset, no refusal: silence, then a reconnect that times out
        async with asyncio.timeout(2.0):  # the silence backstop would take 10 s
            while states(table)["a"] is not NodeState.LOST:
                table = await c.wait_table(table.version, timeout_s=2.0)
        node.link.set()
        while states(table)["a"] is not NodeState.READY:
            table = await c.wait_table(table.version, timeout_s=2.0)
    finally:
        await c.stop()


@pytest.mark.timeout(10)
async def test_load_alone_reaches_the_gateways_at_most_every_measured_push_s() -> None:
    node = FakeNode("a")
    c = controller({"a:1": node}, measured_push_s=0.5)
    await c.start()
    loop = asyncio.get_running_loop()
    try:
        table = await c.wait_table(0)
        node.running = 3
        table = await c.wait_table(table.version, timeout_s=2.0)  # just published
        assert table.nodes[0].running == 3
        node.running = 5  # reported every 10 ms, held back until 0.5 s after the last table
        asked = loop.time()
        table = await c.wait_table(table.version, timeout_s=2.0)
        assert table.nodes[0].running == 5 and loop.time() - asked >= 0.45
        c.set_draining("a", True)  # anything but load goes out at once
        asked = loop.time()
        table = await c.wait_table(table.version, timeout_s=2.0)
        assert states(table) == {"a": NodeState.DRAINING} and loop.time() - asked < 0.2
    finally:
        await c.stop()


@pytest.mark.timeout(10)
async def test_a_start_that_fails_is_tried_again_and_says_why(tmp_path: Path) -> None:
    ledger = tmp_path / "ledger.sqlite3"
    ledger.write_bytes(b"not a database, by a long way: " * 100)
    nodes = {"a:1": FakeNode("a")}
    config = ControllerConfig(peers=tuple(nodes), mdns=False, tick_s=0.02, data_dir=str(tmp_path))
    c = Controller(config, client_factory=lambda a: FakeClient(nodes[a], a))  # type: ignore[arg-type, return-value]
    starting = asyncio.get_running_loop().create_task(c.start_until_started(0.01, 0.05))
    for _ in range(500):  # the first try fails at once; it is told, not raised
        if c.start_error is not None:
            break
        await asyncio.sleep(0.01)
    assert c.start_error is not None and "not a database" in c.start_error and not starting.done()
    ledger.unlink()  # the admin moves the broken file away
    await asyncio.wait_for(starting, 5)
    try:
        assert c.start_error is None
        table = await asyncio.wait_for(c.wait_table(0), 5)
        assert [n.name for n in table.nodes] == ["a"]
    finally:
        await c.stop()
