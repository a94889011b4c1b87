"""Assembles the meterless Ray Serve application: N gateway replicas and one controller."""

from __future__ import annotations

import asyncio
import hmac
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ray import serve
from ray.serve.handle import DeploymentHandle

from cluster.access.key_store import FILE_NAME as KEYS_FILE
from cluster.access.key_store import KeyRegistry
from cluster.access.keys import KeyTable
from cluster.control.config import ControllerConfig
from cluster.control.controller import Controller
from cluster.deployments import rebalance
from cluster.deployments.deployer import DeployError
from cluster.deployments.placement import DeploymentSpec
from cluster.errors import ApiError
from cluster.gateway.replica import Gateway, GatewaySettings
from cluster.ledger.rows import UsageAck, UsageBatch
from cluster.types import NodeTable

logger = logging.getLogger(__name__)

APP_NAME = "meterless"


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
        self._started = asyncio.get_running_loop().create_task(self._controller.start())
        self._keys = KeyRegistry(
            Path(config.data_dir) / KEYS_FILE if config.data_dir else ":memory:"
        )
        self._keys_open = asyncio.get_running_loop().create_task(self._keys.open())

    async def wait_table(self, known_version: int) -> NodeTable:
        """Long poll for a node table newer than `known_version`."""
        await self._started
        return await self._controller.wait_table(known_version)

    async def sessions(self) -> list[dict[str, Any]]:
        """Where each node source was reached (for `cluster nodes --json`)."""
        return self._controller.sessions()

    async def set_draining(self, node_id: str, draining: bool) -> NodeTable:
        """Drain (its replicas are placed elsewhere first) or uncordon a node; the new table."""
        await self._started
        await self._controller.deployer.cordon(node_id, draining, self._controller.table())
        return self._controller.table()

    async def deploy(self, spec: DeploymentSpec, dry_run: bool) -> dict[str, Any]:
        """Add or change a deployment (or only show its placement); errors as {"error": ...}."""
        await self._started
        return await _answer(
            self._controller.deployer.deploy(spec, self._controller.table(), dry_run=dry_run)
        )

    async def undeploy(self, name: str) -> dict[str, Any]:
        """Unload a deployment's replicas and forget it."""
        await self._started
        return await _answer(self._controller.deployer.undeploy(name))

    async def deployments(self) -> list[dict[str, Any]]:
        """Desired vs actual per deployed model."""
        await self._started
        return self._controller.deployer.report(self._controller.table())

    async def rebalance(self, since: str, dry_run: bool) -> dict[str, Any]:
        """Move replicas toward the ledger's recent demand and the nodes' measured speed."""
        await self._started
        ledger, table = self._controller.ledger, self._controller.table()
        demand = rebalance.demand_by_model((await ledger.usage(since, "model"))["groups"])
        tps = rebalance.tps_by_node((await ledger.usage(since, "node"))["groups"])
        for node in table.nodes:  # a node the ledger has not timed yet: its live rate
            if node.tps_measured:
                tps.setdefault(node.node_id, node.decode_tps)
        result = await _answer(
            self._controller.deployer.rebalance(table, demand, tps, dry_run=dry_run)
        )
        return {"since": since, **result}

    async def record_usage(self, batch: UsageBatch) -> UsageAck:
        """Commit a gateway replica's batch of usage rows."""
        await self._started
        return await self._controller.ledger.record(batch)

    async def cost_report(self, since: str) -> dict[str, Any]:
        """The cost report over a window (24h, 7d, 30d, all...)."""
        await self._started
        return await self._controller.ledger.cost(since)

    async def usage_report(self, since: str, by: str) -> dict[str, Any]:
        """Requests and tokens per model, node or key over a window."""
        await self._started
        report = await self._controller.ledger.usage(since, by)
        if by == "key":  # the key's name beside its id, for people
            names = {k: r.name for k, r in self._keys.table().keys.items()}
            for group in report["groups"]:
                group["name"] = names.get(group["key"] or "")
        return report

    async def wait_keys(self, known_version: int) -> KeyTable:
        """Long poll for a key table newer than `known_version` (hashes only, no secrets)."""
        await self._keys_open
        return await self._keys.wait_table(known_version)

    async def list_keys(self) -> list[dict[str, Any]]:
        """Every key, live and revoked, as `cluster keys list` shows it."""
        await self._keys_open
        return [
            r.public() for r in sorted(self._keys.table().keys.values(), key=lambda r: r.created_at)
        ]

    async def create_key(
        self, name: str, models: tuple[str, ...], max_concurrent: int | None
    ) -> dict[str, Any] | ApiError:
        """Make a key; the answer is the only place the full key ever shows.

        An ApiError is returned, not raised, so that it reaches the gateway as itself.
        """
        await self._keys_open
        try:
            record, key = await self._keys.create(name, models, max_concurrent)
        except ApiError as exc:
            return exc
        return {**record.public(), "key": key}

    async def revoke_key(self, name: str) -> dict[str, Any] | ApiError:
        """Revoke the live key called `name` (an ApiError returned if there is none)."""
        await self._keys_open
        try:
            return (await self._keys.revoke(name)).public()
        except ApiError as exc:
            return exc

    async def set_cost(self, node_id: str, changes: dict[str, float]) -> dict[str, Any]:
        """The admin's cost profile for a node; it wins over the agent's and is persisted."""
        await self._started
        return await self._controller.ledger.set_cost(node_id, changes)

    async def metrics_snapshot(self) -> dict[str, Any]:
        """For /metrics: the cluster's request counts, and per-node live and cost figures."""
        await self._started
        return await self._controller.ledger.metrics()

    async def prepare_shutdown(self, token: str, timeout_s: float) -> dict[str, Any] | None:
        """Refuse new requests and wait until the gateways have sent every usage row.

        Only for the `cluster up` that started this app (it knows the token); None otherwise.
        """
        expected = self._controller.config.shutdown_token
        if not expected or not hmac.compare_digest(token.encode(), expected.encode()):
            return None
        await self._started
        return await self._controller.ledger.prepare_shutdown(timeout_s)


async def _answer(call: Any) -> dict[str, Any]:
    """The call's answer, or a DeployError as {"error": {...}} (exceptions cross Serve badly)."""
    try:
        answer: dict[str, Any] = await call
    except DeployError as exc:
        return {"error": {"status": exc.status, "message": str(exc)}}
    return answer


# No access log line per request from Serve: the ledger is the record of requests, and the
# line cost the gateway 32-38 us of its ~1.45 ms per short request (about 2.4%; three runs, two
# `cluster up`s side by side in front of bench/stub_agent.py, each started first at least once).
GatewayDeployment = serve.deployment(
    name="gateway",
    max_ongoing_requests=1_000,
    graceful_shutdown_timeout_s=5,
    ray_actor_options={"num_cpus": 0},
    logging_config={"enable_access_log": False},
)(Gateway)


def build_app(config: AppConfig) -> serve.Application:
    """The bound application, ready for `serve.run`."""
    controller: DeploymentHandle = ControllerDeployment.bind(config.controller)  # type: ignore[assignment]
    return GatewayDeployment.options(num_replicas=config.gateway_replicas).bind(
        controller, config.gateway
    )
