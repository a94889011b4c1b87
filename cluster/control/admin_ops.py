"""The admin API's operations, run in the controller's process; the gateway's routes call them.

Each public coroutine of AdminOps is one operation, called by name through the controller's
Serve handle (`ControllerDeployment.admin`). An admin mistake comes back as an ApiError value:
exceptions cross Serve handles badly.
"""

from __future__ import annotations

from typing import Any

from cluster.access.key_store import KeyRegistry
from cluster.control.controller import Controller
from cluster.deployments import aliases, rebalance
from cluster.deployments.deployer import DeployError
from cluster.deployments.placement import DeploymentSpec
from cluster.errors import ApiError, InvalidRequest, NotFound
from cluster.ledger.reports import Window
from cluster.ledger.series import Span
from cluster.types import ModelAlias, ModelName, NodeId, NodeTable


class AdminOps:
    """Every admin operation, over the controller and the key registry."""

    def __init__(self, controller: Controller, keys: KeyRegistry) -> None:
        self._controller = controller
        self._keys = keys

    async def sessions(self) -> list[dict[str, Any]]:
        """Where each node source was reached (for `cluster nodes --json`)."""
        return self._controller.sessions()

    async def set_draining(self, node_id: NodeId, draining: bool) -> NodeTable:
        """Drain (its replicas are placed elsewhere first) or uncordon a node; the new table."""
        c = self._controller
        await c.deployer.cordon(node_id, draining, c.table())
        return c.table()

    async def deploy(self, spec: DeploymentSpec, dry_run: bool) -> dict[str, Any]:
        """Add or change a deployment (or only show its placement)."""
        c = self._controller
        return await _deploying(c.deployer.deploy(spec, c.table(), dry_run=dry_run))

    async def undeploy(self, name: ModelName) -> dict[str, Any]:
        """Unload a deployment's replicas and forget it."""
        return await _deploying(self._controller.deployer.undeploy(name))

    async def deployments(self) -> list[dict[str, Any]]:
        """Desired vs actual per deployed model."""
        return self._controller.deployer.report(self._controller.table())

    async def rebalance(self, window: Window, dry_run: bool) -> dict[str, Any]:
        """Move replicas toward the ledger's recent demand and the nodes' measured speed."""
        ledger, table = self._controller.ledger, self._controller.table()
        demand = rebalance.demand_by_model((await ledger.usage(window, "model"))["groups"])
        tps = rebalance.tps_by_node((await ledger.usage(window, "node"))["groups"])
        for node in table.nodes:  # a node the ledger has not timed yet: its live rate
            if node.tps_measured:
                tps.setdefault(node.node_id, node.decode_tps)
        moves = self._controller.deployer.rebalance(table, demand, tps, dry_run=dry_run)
        return {"since": window.label, **await _deploying(moves)}

    async def cost_report(self, window: Window) -> dict[str, Any]:
        """The cost report over a window (24h, 7d, 30d, all...)."""
        return await self._controller.ledger.cost(window)

    async def usage_report(self, window: Window, by: str) -> dict[str, Any]:
        """Requests and tokens per model, node or key over a window."""
        report = await self._controller.ledger.usage(window, by)
        if by == "key":  # the key's name beside its id, for people
            names = {k: r.name for k, r in self._keys.table().keys.items()}
            for group in report["groups"]:
                group["name"] = names.get(group["key"] or "")
        return report

    async def recent(self, seconds: float) -> dict[str, Any]:
        """The cluster's live totals over the last `seconds` (the dashboard's Overview)."""
        return await self._controller.ledger.live(seconds)

    async def traffic(self, span: Span, by: str) -> dict[str, Any]:
        """Requests, tokens, TTFT and outcomes over time by model, node, key or outcome."""
        report = await self._controller.ledger.traffic(span, by)
        if by == "key":  # the key's name, for people; its id where it has none
            names = {k: r.name for k, r in self._keys.table().keys.items()}
            report["groups"] = {names.get(k, k): v for k, v in report["groups"].items()}
        return report

    async def money(self, span: Span) -> dict[str, Any]:
        """Owned cost against cloud-equivalent over time, and the all-time figures per node."""
        return await self._controller.ledger.money(span)

    async def set_cost(self, node_id: NodeId, changes: dict[str, float]) -> dict[str, Any]:
        """The admin's cost profile for a node; it wins over the agent's and is persisted."""
        return await self._controller.ledger.set_cost(node_id, changes)

    async def prune_ledger(self, before: float) -> dict[str, Any]:
        """Fold the ledger's rows before `before` into hourly sums and delete them."""
        return await self._controller.ledger.prune(before)

    async def list_keys(self) -> list[dict[str, Any]]:
        """Every key, live and revoked, as `cluster keys list` shows it."""
        records = sorted(self._keys.table().keys.values(), key=lambda r: r.created_at)
        return [r.public() for r in records]

    async def create_key(
        self,
        name: str,
        models: tuple[str, ...],
        max_concurrent: int | None,
        local_only: bool = False,
    ) -> dict[str, Any]:
        """Make a key; the answer is the only place the full key ever shows."""
        record, key = await self._keys.create(name, models, max_concurrent, local_only)
        return {**record.public(), "key": key}

    async def revoke_key(self, name: str) -> dict[str, Any]:
        """Revoke the live key called `name`."""
        return (await self._keys.revoke(name)).public()

    async def list_aliases(self) -> list[dict[str, Any]]:
        """Every model alias, in the order a gateway tries them."""
        return [aliases.alias_json(a) for a in aliases.ordered(self._controller.aliases())]

    async def set_alias(self, name: str, model: ModelName) -> dict[str, Any]:
        """Make `name` (or every name its glob matches) another name for `model`."""
        c = self._controller
        known = {*c.deployer.specs, *(m for n in c.table().nodes for m in n.models)}
        aliases.check(name, model, c.aliases(), known)
        await c.set_alias(name, model)
        return {**aliases.alias_json(ModelAlias(name, model)), "served": model in known}

    async def remove_alias(self, name: str) -> dict[str, Any]:
        """Forget the alias called `name` (its exact text, globs included)."""
        c = self._controller
        model = c.aliases().get(name)
        if model is None:
            known = ", ".join(sorted(c.aliases())) or "none"
            raise NotFound(f"no alias named {name!r}; aliases: {known}", param="name")
        await c.set_alias(name, None)
        return {**aliases.alias_json(ModelAlias(name, model)), "removed": True}


OPERATIONS = frozenset(
    name for name in vars(AdminOps) if not name.startswith("_") and name != "OPERATIONS"
)


async def _deploying(call: Any) -> dict[str, Any]:
    """The deployer's answer; its DeployError as the ApiError the admin should see."""
    try:
        answer: dict[str, Any] = await call
    except DeployError as exc:
        raise (NotFound if exc.status == 404 else InvalidRequest)(str(exc)) from None
    return answer


async def run(ops: AdminOps, name: str, args: tuple[Any, ...]) -> Any:
    """Run the operation `name`; an ApiError it raises is returned, to cross Serve as a value."""
    if name not in OPERATIONS:
        raise ValueError(f"no admin operation {name!r}")
    try:
        return await getattr(ops, name)(*args)
    except ApiError as exc:
        return exc
