"""Fakes shared by unit tests: a node agent that is only a few knobs, and its NodeClient."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from cluster.node_client import NodeDescription, NodeStatusSample, NodeTimeout, NodeUnavailable
from cluster.types import CostProfile
from node_agent.types import ModelStatus


@dataclass
class FakeNode:
    """What a fake agent does: how long Describe takes, whether it answers, how it streams."""

    node_id: str
    describe_s: float = 0.0
    up: bool = True
    link: asyncio.Event = field(default_factory=asyncio.Event)  # cleared: the cable is cut

    def __post_init__(self) -> None:
        self.link.set()

    statuses: int = 1_000_000  # how many statuses before the stream breaks
    running: int = 0  # requests it reports running


class FakeClient:
    """A NodeClient for one fake node."""

    def __init__(self, node: FakeNode, address: str) -> None:
        self.node, self.address = node, address

    async def close(self) -> None:
        """Nothing to close."""

    async def describe(self, timeout: float = 5.0) -> NodeDescription:
        """Answer after `describe_s`, or fail when the node is down."""
        await asyncio.sleep(self.node.describe_s)
        if not self.node.link.is_set():  # nothing arrives, nothing is refused
            await asyncio.sleep(timeout)
            raise NodeTimeout(f"{self.address}: deadline exceeded")
        if not self.node.up:
            raise NodeUnavailable(f"{self.address}: connection refused")
        return NodeDescription(
            node_id=self.node.node_id,
            name=self.node.node_id,
            agent_version="0",
            protocol_version="1.0",
            engines=("mlx",),
            accelerator_kind="cpu",
            accelerator_name="",
            memory_total_bytes=1 << 30,
            memory_available_bytes=1 << 30,
            cost=CostProfile(),
            models=(),
        )

    async def watch_status(self, interval_ms: int = 0) -> AsyncIterator[NodeStatusSample]:
        """Statuses every 10 ms until `statuses` run out or the node goes down."""
        for _ in range(self.node.statuses):
            await self.node.link.wait()  # a stream over a cut link just stops
            if not self.node.up:
                break
            yield NodeStatusSample(
                node_id=self.node.node_id,
                unix_ms=0,
                memory_used_bytes=0,
                memory_available_bytes=0,
                power_watts=None,
                busy_seconds=0.0,
                models=(
                    ModelStatus(
                        model="demo",
                        running=self.node.running,
                        waiting=0,
                        generated_tokens=0,
                        prompt_tokens=0,
                        cached_prompt_tokens=0,
                        prompt_cache_hits=0,
                        requests_finished=0,
                        memory_bytes=0,
                        busy_seconds=0.0,
                    ),
                ),
            )
            await asyncio.sleep(0.01)
        raise NodeUnavailable(f"{self.address}: status stream ended")
