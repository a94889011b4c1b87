"""The gateway replica's gRPC clients: one per node address, retired with a grace for the
streams still running when a node leaves the table."""

from __future__ import annotations

import asyncio

from cluster.node_client import NodeClient
from cluster.types import NodeState, NodeTable
from node_agent.trust import ClusterSecret


class ClientPool:
    """One NodeClient per node address, shared by every request of a gateway replica."""

    def __init__(
        self, *, retire_grace_s: float = 600.0, secret: ClusterSecret | None = None
    ) -> None:
        self._clients: dict[str, NodeClient] = {}
        self._secret = secret
        self.retire_grace_s = retire_grace_s
        self._retiring: set[asyncio.Task[None]] = set()

    def get(self, address: str, *, plaintext: bool = False) -> NodeClient:
        """The client for an address, created on first use (TLS unless the node is plaintext)."""
        key = f"plain:{address}" if plaintext else address
        client = self._clients.get(key)
        if client is None:
            secret = None if plaintext else self._secret
            client = self._clients[key] = NodeClient(address, secret=secret)
        return client

    async def follow(self, table: NodeTable) -> None:
        """Keep the clients of the table's nodes, except lost ones.

        A lost node's channel has been failing to connect, and gRPC fails calls on such a
        channel at once with its last error until one of its reconnect attempts (2 s apart at
        most, CHANNEL_OPTIONS) succeeds: a node back and ready could still fail its first
        requests. Retired, the node comes back with a fresh channel, which connects on the first
        call; streams on the old one may still finish.
        """
        await self.retain({n.address for n in table.nodes if n.state is not NodeState.LOST})

    async def retain(self, addresses: set[str]) -> None:
        """Retire the clients of addresses no longer in the table; their streams may finish."""
        for address in [a for a in self._clients if a.removeprefix("plain:") not in addresses]:
            # A table without the node (a restarted controller still rediscovering) must not
            # cut streams in flight: new calls are refused, running ones get the grace.
            task = asyncio.create_task(self._clients.pop(address).close(self.retire_grace_s))
            self._retiring.add(task)
            task.add_done_callback(self._retiring.discard)
