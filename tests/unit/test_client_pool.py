"""The gateway's pool of node clients: a node leaving the table does not cut its streams."""

from __future__ import annotations

import asyncio

from cluster.forward import ClientPool


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
