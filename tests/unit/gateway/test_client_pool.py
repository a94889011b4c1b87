"""The gateway's pool of node clients: a node leaving the table does not cut its streams, and
one that was lost comes back on a fresh channel."""

from __future__ import annotations

import asyncio
from dataclasses import replace

from cluster.gateway.clients import ClientPool
from cluster.types import ModelName, NodeId, NodeState, NodeTable, NodeView


async def test_a_client_dropped_from_the_table_is_closed_with_a_grace() -> None:
    pool = ClientPool(retire_grace_s=7.0)
    client = pool.get("127.0.0.1:9")
    graces: list[float | None] = []
    close = client.close

    async def spy(grace_s: float | None = None) -> None:
        graces.append(grace_s)
        await close(grace_s)

    client.close = spy  # type: ignore[method-assign]
    await pool.retain({"127.0.0.1:10"})
    await asyncio.sleep(0.05)
    assert graces == [7.0]  # streams in flight may finish; only new calls are refused
    assert pool.get("127.0.0.1:9") is not client
    await pool.retain(set())


async def test_a_lost_node_gets_a_fresh_client_when_it_is_back() -> None:
    pool = ClientPool(retire_grace_s=0.0)
    ready = NodeView(
        node_id=NodeId("n"),
        name="n",
        address="127.0.0.1:9",
        engines=("mlx",),
        state=NodeState.READY,
        models=(ModelName("m"),),
    )
    draining = replace(ready, node_id=NodeId("d"), address="127.0.0.1:11", state=NodeState.DRAINING)
    failing, kept = pool.get("127.0.0.1:9"), pool.get("127.0.0.1:11")
    await pool.follow(NodeTable(version=1, nodes=(replace(ready, state=NodeState.LOST), draining)))
    assert pool.get("127.0.0.1:11") is kept  # draining, not gone: its streams carry on
    await pool.follow(NodeTable(version=2, nodes=(ready, draining)))
    assert pool.get("127.0.0.1:9") is not failing
    await pool.retain(set())
