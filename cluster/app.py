"""Assembles the meterless Ray Serve application: N gateway replicas and one controller."""

from __future__ import annotations

import asyncio
import hmac
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ray import serve
from ray.serve.config import BackpressureConfig

from cluster.access.key_store import FILE_NAME as KEYS_FILE
from cluster.access.key_store import KeyRegistry
from cluster.access.keys import KeyTable
from cluster.control import admin_ops
from cluster.control.config import ControllerConfig
from cluster.control.controller import Controller
from cluster.gateway.front import DEFAULT_LIMITS
from cluster.gateway.replica import Gateway, GatewaySettings
from cluster.ledger.reports import Window
from cluster.ledger.rows import UsageAck, UsageBatch
from cluster.types import NodeTable

logger = logging.getLogger(__name__)

APP_NAME = "meterless"
PRICE_WINDOW = Window.parse("7d")  # what a model's $/Mtok in /v1/models is measured over


@dataclass(frozen=True, kw_only=True)
class AppConfig:
    """Everything `cluster up` decides about the application."""

    controller: ControllerConfig = field(default_factory=ControllerConfig)
    gateway: GatewaySettings = field(default_factory=GatewaySettings)
    gateway_replicas: int = 1


@serve.deployment(
    name="controller",
    num_replicas=1,
    max_ongoing_requests=10_000,
    graceful_shutdown_timeout_s=2,
    ray_actor_options={"num_cpus": 0},
)
class ControllerDeployment:
    """The singleton controller, behind a Serve handle."""

    def __init__(self, config: ControllerConfig) -> None:
        self._controller = Controller(config)
        self._started = asyncio.get_running_loop().create_task(
            self._controller.start_until_started()
        )
        self._keys = KeyRegistry(
            Path(config.data_dir) / KEYS_FILE if config.data_dir else ":memory:"
        )
        self._keys_open = asyncio.get_running_loop().create_task(self._keys.open())
        self._ops = admin_ops.AdminOps(self._controller, self._keys)

    async def start_error(self) -> str | None:
        """Why the controller has not started yet, while it tries again (None once started)."""
        return None if self._started.done() else self._controller.start_error

    async def wait_table(self, known_version: int) -> NodeTable:
        """Long poll for a node table newer than `known_version`."""
        await self._started
        return await self._controller.wait_table(known_version)

    async def admin(self, operation: str, *args: Any) -> Any:
        """Run one admin operation by name (cluster/control/admin_ops.py); an admin mistake
        comes back as an ApiError value."""
        await self._started
        await self._keys_open
        return await admin_ops.run(self._ops, operation, args)

    async def record_usage(self, batch: UsageBatch) -> UsageAck:
        """Commit a gateway replica's batch of usage rows."""
        await self._started
        return await self._controller.ledger.record(batch)

    async def wait_keys(self, known_version: int) -> KeyTable:
        """Long poll for a key table newer than `known_version` (hashes only, no secrets)."""
        await self._keys_open
        return await self._keys.wait_table(known_version)

    async def metrics_snapshot(self) -> dict[str, Any]:
        """For /metrics: the cluster's request counts, and per-node live and cost figures."""
        await self._started
        return await self._controller.ledger.metrics()

    async def model_prices(self) -> dict[str, float]:
        """Each model's measured $/Mtok over the last week, for `/v1/models`."""
        await self._started
        return await self._controller.ledger.model_prices(PRICE_WINDOW)

    async def prepare_shutdown(self, token: str, timeout_s: float) -> dict[str, Any] | None:
        """Refuse new requests and wait until the gateways have sent every usage row.

        Only for the `cluster up` that started this app (it knows the token); None otherwise.
        """
        expected = self._controller.config.shutdown_token
        if not expected or not hmac.compare_digest(token.encode(), expected.encode()):
            return None
        await self._started
        return await self._controller.ledger.prepare_shutdown(timeout_s)


# No access log line per request from Serve: the ledger is the record of requests, and the
# line cost the gateway 32-38 us of its ~1.45 ms per short request (about 2.4%; three runs, two
# `cluster up`s side by side in front of bench/stub_agent.py, each started first at least once).
# Behind Serve's proxy (several gateway replicas) a replica is sent at most what its front lets in
# at once, and the proxy holds at most PROXY_QUEUE more: past that Serve answers 503 with
# Retry-After (in its own plain text, not a dialect's shape) rather than queueing without bound.
PROXY_QUEUE = 1_000
GatewayDeployment = serve.deployment(
    name="gateway",
    max_ongoing_requests=DEFAULT_LIMITS.max_requests,
    max_queued_requests=PROXY_QUEUE,
    backpressure_config=BackpressureConfig(status_code=503, retry_after_s=2),
    graceful_shutdown_timeout_s=5,
    ray_actor_options={"num_cpus": 0},
    logging_config={"enable_access_log": False},
)(Gateway)


def build_app(config: AppConfig) -> serve.Application:
    """The bound application, ready for `serve.run`."""
    controller = ControllerDeployment.bind(config.controller)  # type: ignore[attr-defined]
    return GatewayDeployment.options(num_replicas=config.gateway_replicas).bind(
        controller, config.gateway
    )
