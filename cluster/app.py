"""Assembles the meterless Ray Serve application: N gateway replicas and one controller."""

from __future__ import annotations

import asyncio
import hmac
import logging
from dataclasses import dataclass, field
from typing import Any

from ray import serve
from ray.serve.handle import DeploymentHandle

from cluster.controller import Controller, ControllerConfig
from cluster.gateway import Gateway, GatewaySettings
from cluster.recorder import UsageAck, UsageBatch
from cluster.types import NodeTable

logger = logging.getLogger(__name__)

APP_NAME = "meterless"


@dataclass(frozen=True, kw_only=True)
class AppConfig:
    """Everything `cluster up` decides about the application."""

    controller: ControllerConfig = field(default_factory=ControllerConfig)
    gateway: GatewaySettings = field(default_factory=GatewaySettings)
    gateway_replicas: int = 1


@serve.deployment(name="controller", num_replicas=1, max_ongoing_requests=10_000,
                  graceful_shutdown_timeout_s=2, ray_actor_options={"num_cpus": 0})
class ControllerDeployment:
    """The singleton controller, behind a Serve handle."""

    def __init__(self, config: ControllerConfig) -> None:
        self._controller = Controller(config)
        self._started = asyncio.get_running_loop().create_task(self._controller.start())

    async def wait_table(self, known_version: int) -> NodeTable:
        """Long poll for a node table newer than `known_version`."""
        await self._started
        return await self._controller.wait_table(known_version)

    async def sessions(self) -> list[dict[str, Any]]:
        """Where each node source was reached (for `cluster nodes --json`)."""
        return self._controller.sessions()

    async def set_draining(self, node_id: str, draining: bool) -> NodeTable:
        """Drain or uncordon a node; returns the new table."""
        self._controller.set_draining(node_id, draining)
        return self._controller.table()

    async def record_usage(self, batch: UsageBatch) -> UsageAck:
        """Commit a gateway replica's batch of usage rows."""
        await self._started
        return await self._controller.books.record(batch)

    async def cost_report(self, since: str) -> dict[str, Any]:
        """The cost report over a window (24h, 7d, 30d, all...)."""
        await self._started
        return await self._controller.books.cost(since)

    async def usage_report(self, since: str, by: str) -> dict[str, Any]:
        """Requests and tokens per model, node or key over a window."""
        await self._started
        return await self._controller.books.usage(since, by)

    async def set_cost(self, node_id: str, changes: dict[str, float]) -> dict[str, Any]:
        """The admin's cost profile for a node; it wins over the agent's and is persisted."""
        await self._started
        return await self._controller.books.set_cost(node_id, changes)

    async def metrics_snapshot(self) -> dict[str, Any]:
        """Per-node live and cost figures for /metrics."""
        await self._started
        return await self._controller.books.metrics()

    async def prepare_shutdown(self, token: str, timeout_s: float) -> dict[str, Any] | None:
        """Refuse new requests and wait until the gateways have sent every usage row.

        Only for the `cluster up` that started this app (it knows the token); None otherwise.
        """
        expected = self._controller.config.shutdown_token
        if not expected or not hmac.compare_digest(token.encode(), expected.encode()):
            return None
        await self._started
        return await self._controller.books.prepare_shutdown(timeout_s)


GatewayDeployment = serve.deployment(
    name="gateway", max_ongoing_requests=1_000, graceful_shutdown_timeout_s=5,
    ray_actor_options={"num_cpus": 0},
)(Gateway)


def build_app(config: AppConfig) -> serve.Application:
    """The bound application, ready for `serve.run`."""
    controller: DeploymentHandle = ControllerDeployment.bind(config.controller)  # type: ignore[assignment]
    return GatewayDeployment.options(num_replicas=config.gateway_replicas).bind(
        controller, config.gateway)
