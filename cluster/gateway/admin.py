"""The admin API, declared once: its routes, and what they answer about nodes and models.

Each route checks the admin token or the dashboard's session (`admin_replica`), parses its
input here, and calls one operation of the controller's by name (cluster/control/admin_ops.py).
The ledger flush is the exception: only the `cluster up` that started the app may call it,
with its shutdown token.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Annotated, Any, Protocol

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from cluster.access.key_store import parse_key_request
from cluster.access.request_gate import RequestGate
from cluster.deployments.aliases import parse_target
from cluster.deployments.requests import merged_models, parse_deploy, parse_model_name
from cluster.errors import ApiError, Forbidden, InvalidRequest, NotFound
from cluster.gateway.openai.response import json_response
from cluster.gateway.ui import guard
from cluster.gateway.ui.session import Sessions
from cluster.ledger.reports import Window, parse_before, parse_cost_changes
from cluster.ledger.store import GROUPS
from cluster.types import NodeTable, NodeView


class AdminHost(Protocol):
    """What the admin routes need of a gateway replica."""

    table: NodeTable
    gate: RequestGate
    sessions: Sessions

    async def admin(self, operation: str, *args: Any) -> Any:
        """Run a controller admin operation; raise the ApiError it returns."""


def admin_replica(request: Request) -> AdminHost:
    """The replica serving this request, once the request has shown the admin token, or
    the dashboard's session (with its CSRF token for a change)."""
    replica: AdminHost = request.app.state.replica
    if guard.has_session(request):
        guard.signed_in(replica.sessions, request)
    else:
        replica.gate.admin(request.headers.get("authorization"))
    return replica


Admin = Annotated[AdminHost, Depends(admin_replica)]
router = APIRouter(prefix="/admin")


@router.get("/nodes")
async def nodes(host: Admin) -> Response:
    """Every known node with its live state."""
    sessions = await host.admin("sessions")
    table = host.table
    return json_response(
        {
            "version": table.version,
            "nodes": [node_json(n) for n in table.nodes],
            "sessions": sessions,
        }
    )


@router.get("/models")
async def models(host: Admin) -> Response:
    """Every model any node has, with the nodes serving it, and desired vs actual."""
    desired = await host.admin("deployments")
    return json_response({"models": merged_models(models_json(host.table), desired)})


@router.post("/deployments")
async def deploy(host: Admin, request: Request) -> Response:
    """Deploy a model (or, with dry_run, only show where it would go)."""
    spec, dry_run = parse_deploy(
        await request.body(), lambda ref: find_node(host.table, ref).node_id
    )
    return json_response(await host.admin("deploy", spec, dry_run))


@router.post("/undeploy")
async def undeploy(host: Admin, request: Request) -> Response:
    """Unload every replica of a deployed model."""
    return json_response(await host.admin("undeploy", parse_model_name(await request.body())))


@router.post("/rebalance")
async def rebalance(host: Admin, since: str = "1h", dry_run: bool = False) -> Response:
    """Move replicas toward recent demand; with dry_run, only show the moves."""
    return json_response(await host.admin("rebalance", Window.parse(since), dry_run))


@router.post("/nodes/{node}/drain")
async def drain(host: Admin, node: str) -> Response:
    """Stop sending new requests to a node; in-flight ones finish."""
    return await _set_draining(host, node, True)


@router.post("/nodes/{node}/uncordon")
async def uncordon(host: Admin, node: str) -> Response:
    """Undo a drain."""
    return await _set_draining(host, node, False)


@router.get("/cost")
async def cost(host: Admin, since: str = "24h") -> Response:
    """Per node and in total: tokens, busy %, cost, $/Mtok, cloud-equivalent, breakeven."""
    return json_response(await host.admin("cost_report", Window.parse(since)))


@router.get("/usage")
async def usage(host: Admin, since: str = "24h", by: str = "model") -> Response:
    """Requests and tokens per model, node or key."""
    window = Window.parse(since)
    if by not in GROUPS:
        raise InvalidRequest(f"by: one of {', '.join(GROUPS)}", param="by")
    return json_response(await host.admin("usage_report", window, by))


@router.post("/ledger/prune")
async def prune(host: Admin, before: str) -> Response:
    """Fold the ledger's rows before a date into hourly sums and delete them (retention)."""
    when = parse_before(before, time.time())
    return json_response(await host.admin("prune_ledger", when))


@router.post("/nodes/{node}/cost")
async def set_cost(host: Admin, node: str, request: Request) -> Response:
    """Set a node's cost profile (the fields given); it wins over the agent's flags."""
    found = find_node(host.table, node)
    changes = parse_cost_changes(await request.body())
    return json_response(await host.admin("set_cost", found.node_id, changes))


@router.get("/keys")
async def keys(host: Admin) -> Response:
    """Every API key (live and revoked), without secrets or hashes."""
    return json_response({"keys": await host.admin("list_keys")})


@router.post("/keys")
async def create_key(host: Admin, request: Request) -> Response:
    """Make a key; the answer holds the full key, which is never shown again."""
    fields = parse_key_request(await request.body())
    return json_response(await host.admin("create_key", *fields))


@router.post("/keys/{name}/revoke")
async def revoke_key(host: Admin, name: str) -> Response:
    """Revoke a key; every gateway refuses it once the controller's push arrives."""
    return json_response(await host.admin("revoke_key", name))


@router.get("/aliases")
async def aliases(host: Admin) -> Response:
    """Every model alias (exact names and globs), in the order a gateway tries them."""
    return json_response({"aliases": await host.admin("list_aliases")})


@router.put("/aliases/{name:path}")
async def set_alias(host: Admin, name: str, request: Request) -> Response:
    """Create or replace an alias: requests for `name` (or names its glob matches) go to `model`."""
    model = parse_target(await request.body())
    return json_response(await host.admin("set_alias", name, model))


@router.delete("/aliases/{name:path}")
async def remove_alias(host: Admin, name: str) -> Response:
    """Forget an alias; gateways stop resolving it once the controller's push arrives."""
    return json_response(await host.admin("remove_alias", name))


@router.post("/ledger/flush")
async def flush(request: Request, timeout_s: float = 10.0) -> Response:
    """For `cluster up`'s clean stop: refuse new requests, wait for every usage row."""
    token = request.headers.get("x-meterless-shutdown-token", "")
    done = await request.app.state.replica.prepare_shutdown(token, timeout_s)
    if done is None:
        raise Forbidden("only the `cluster up` running this cluster may stop it")
    return json_response(done)


async def _set_draining(host: AdminHost, node: str, draining: bool) -> Response:
    found = find_node(host.table, node)
    host.table = await host.admin("set_draining", found.node_id, draining)
    return json_response({"node": node_json(host.table.get(found.node_id) or found)})


def raised(answer: Any) -> Any:
    """The controller's answer, or the ApiError it returned, raised here."""
    if isinstance(answer, ApiError):
        raise answer
    return answer


def node_json(n: NodeView) -> dict[str, Any]:
    """A node as the admin API shows it."""
    out = dataclasses.asdict(n)
    out["state"] = n.state.value
    out["engines"], out["models"] = list(n.engines), list(n.models)
    out["traits"] = {
        model: {**dataclasses.asdict(t), "capabilities": sorted(t.capabilities)}
        for model, t in n.traits
    }
    return out


def find_node(table: NodeTable, ref: str) -> NodeView:
    """The node whose id or name is `ref`, else whose id starts with it; 404 if none or
    ambiguous. Exact matches win: a node named `a3` is not ambiguous with an id `a3c2…`."""
    matches = [n for n in table.nodes if ref in (n.node_id, n.name)] or [
        n for n in table.nodes if n.node_id.startswith(ref)
    ]
    if len(matches) != 1:
        known = ", ".join(f"{n.name} ({n.node_id[:12]})" for n in table.nodes) or "none"
        what = "ambiguous" if matches else "unknown"
        raise NotFound(f"{what} node {ref!r}; known nodes: {known}", param="node")
    return matches[0]


def models_json(table: NodeTable) -> list[dict[str, Any]]:
    """Per model: every node that has it, and the ones that can take requests."""
    names = sorted({m for n in table.nodes for m in n.models})
    return [
        {
            "model": m,
            "nodes": [n.name for n in table.nodes if m in n.models],
            "ready_nodes": [n.name for n in table.nodes if m in n.models and n.routable],
        }
        for m in names
    ]
