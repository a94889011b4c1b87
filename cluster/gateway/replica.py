"""The HTTP surface: OpenAI-compatible endpoints and the admin API, one exception handler.

A gateway replica never asks the controller anything on the request path: it routes on the
node table it last received from the controller's long poll.
"""

# No `from __future__ import annotations` here: FastAPI must see real annotations on the routes
# after Serve rebinds them as methods.
import asyncio
import gc
import logging
import time
from dataclasses import dataclass, field
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from ray import serve

from cluster.access.key_store import parse_key_request
from cluster.access.keys import visible_models
from cluster.access.request_gate import RequestGate
from cluster.deployments.requests import merged_models, parse_deploy, parse_model_name, raise_error
from cluster.errors import ApiError, Forbidden, InternalError, InvalidRequest
from cluster.gateway import front
from cluster.gateway.admin_json import find_node, models_json, node_json
from cluster.gateway.answer import Answer, collect, json_response, sse_frames
from cluster.gateway.forward import ClientPool, Forwarder, ForwardSettings, Routed
from cluster.gateway.openai_encode import model_list
from cluster.gateway.openai_parse import (
    AnyRequest,
    ChatCompletionRequest,
    CompletionRequest,
    parse_request,
    to_generate_request,
    validation_error_to_api,
)
from cluster.gateway.prefix_keys import prefix_keys_for_messages, prefix_keys_for_text
from cluster.gateway.routing import RouteRequest, expected_tokens, make_router
from cluster.gateway.tally import GatewayMeter, RequestInfo
from cluster.ledger.metrics import CONTENT_TYPE, render
from cluster.ledger.reports import parse_cost_changes, window_seconds
from cluster.ledger.rows import UsageAck, UsageBatch, new_request_id
from cluster.ledger.store import GROUPS
from cluster.types import ModelName, NodeTable
from node_agent.trust import ClusterSecret

logger = logging.getLogger(__name__)

# Allocations between two young-generation collections in a gateway replica (Python's default is
# 700). Serve freezes the startup heap, and what a request allocates dies young, so the default
# collects the same in-flight requests' objects over and over: about 58 us of collector time a
# request. Switching the same replica between 700 and this, round by round, it used 63 and 84 us
# (4-5%) less CPU a request, with no change in what the collections free.
GC_YOUNG_THRESHOLD = 10_000

api = FastAPI(title="meterless", docs_url=None, redoc_url=None)


@api.exception_handler(ApiError)
async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
    return JSONResponse(exc.body(), status_code=exc.status, headers=exc.headers())


@api.exception_handler(RequestValidationError)
async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    return await _api_error(request, validation_error_to_api(exc))


@api.exception_handler(Exception)
async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    logger.exception("unexpected error on %s", request.url.path)
    return await _api_error(request, InternalError("internal error; see the gateway's log"))


@dataclass(frozen=True, kw_only=True)
class GatewaySettings:
    """Knobs of a gateway replica."""

    routing: str = "fastest"
    affinity: bool = True  # `fastest` only: prefix affinity (off only to measure what it brings)
    first_token_timeout_s: float = 60.0
    max_attempts: int = 3
    default_max_tokens: int = 256
    ledger: bool = True  # record one usage row per request (off only to measure what it costs)
    keys_required: bool = False  # see cluster/access/exposure.py for when `cluster up` sets it
    admin_digest: str = ""  # SHA-256 of the admin token; "": the admin API refuses everyone
    metrics_open: bool = True  # /metrics without the admin token
    cluster_secret: ClusterSecret | None = field(default=None, repr=False)  # TLS to the agents


def router_knobs(settings: GatewaySettings) -> dict[str, object]:
    """Keyword arguments for the chosen policy: only `fastest` has prefix affinity to turn off."""
    return {"affinity": settings.affinity} if settings.routing == "fastest" else {}


def _raised(answer: Any) -> Any:
    """The controller's answer, or the ApiError it returned, raised here."""
    if isinstance(answer, ApiError):
        raise answer
    return answer


# The ingress wrapping must happen where the class is defined, and after every helper it uses:
# Serve captures the class, with the module globals its methods name, when it decorates it.
@serve.ingress(api)
class Gateway:
    """One gateway replica: the node table it was pushed, a router, and the node clients."""

    def __init__(self, controller: Any, settings: GatewaySettings) -> None:
        self._controller = controller
        self.settings = settings
        self.table = NodeTable()
        self.forwarder = Forwarder(
            make_router(settings.routing, **router_knobs(settings)),
            ClientPool(secret=settings.cluster_secret),
            ForwardSettings(
                first_token_timeout_s=settings.first_token_timeout_s,
                max_attempts=settings.max_attempts,
            ),
        )
        self.created = int(time.time())
        self._poller = asyncio.get_running_loop().create_task(self._follow_table())
        self.meter = GatewayMeter(self._send_usage if settings.ledger else None)
        self.meter.start()
        self.gate = RequestGate(
            keys_required=settings.keys_required,
            admin_digest=settings.admin_digest,
            metrics_open=settings.metrics_open,
        )
        self._key_poller = asyncio.get_running_loop().create_task(self.gate.follow(self._wait_keys))
        gc.set_threshold(GC_YOUNG_THRESHOLD)  # the older generations keep their defaults

    def __serve_build_asgi_app__(self) -> front.Front:
        """The replica's ASGI app: the completion routes answered in front of FastAPI, which
        serves the rest. Serve calls this after the constructor, on the app it was given."""
        fastapi_app = self.app  # type: ignore[attr-defined]  # set by Serve's ingress wrapper
        return front.Front(
            fastapi_app, replica=self, on_api_error=_api_error, on_unexpected=_unexpected
        )

    async def set_tapping(self, on: bool) -> bool:
        """Whether this replica's requests go to the ledger (on from the start).

        Only bench/ledger.py turns it off, through a Serve handle, to time requests with and
        without the ledger's work in one replica, whose CPU per request differs from another's
        by more than that work. Requests served meanwhile are not recorded. Nothing in the
        cluster calls it, and no HTTP route leads to it."""
        self.meter.tapping = on
        return on

    async def _wait_keys(self, version: int) -> Any:
        return await self._controller.wait_keys.remote(version)

    async def _send_usage(self, batch: UsageBatch) -> UsageAck:
        return await self._controller.record_usage.remote(batch)  # type: ignore[no-any-return]

    async def _follow_table(self) -> None:
        while True:
            try:
                table = await self._controller.wait_table.remote(self.table.version)
            except Exception as exc:  # the controller restarting: keep routing on the last table
                logger.warning("node table long poll failed: %s", exc)
                await asyncio.sleep(1.0)
                continue
            self.table = table
            await self.forwarder.clients.follow(table)

    async def chat_completions(self, request: Request) -> Answer:
        """OpenAI chat completions, streamed or not (POST /v1/chat/completions: front.Front)."""
        req = parse_request(ChatCompletionRequest, await request.body())
        keys = prefix_keys_for_messages([(m.role, m.text) for m in req.messages])
        chars = sum(len(m.text) for m in req.messages)
        return await self._complete(req, keys, chars, request.headers.get("authorization"))

    async def completions(self, request: Request) -> Answer:
        """OpenAI text completions, streamed or not (POST /v1/completions: front.Front)."""
        req = parse_request(CompletionRequest, await request.body())
        return await self._complete(
            req,
            prefix_keys_for_text(req.prompt),
            len(req.prompt),
            request.headers.get("authorization"),
        )

    @api.get("/v1/models")
    async def models(self, request: Request) -> Response:
        """Every model at least one ready node serves and the request's key may use."""
        grant = self.gate.identify(request.headers.get("authorization"))
        models = visible_models(grant, self.table.models())
        return json_response(model_list(models, created=self.created))

    @api.get("/health")
    async def health(self) -> Response:
        """Liveness of this replica, with what it can serve."""
        ready = [n for n in self.table.nodes if n.routable]
        return json_response(
            {"status": "ok", "nodes_ready": len(ready), "models": self.table.models()}
        )

    @api.get("/admin/nodes")
    async def admin_nodes(self, request: Request) -> Response:
        """Every known node with its live state."""
        self.gate.admin(request.headers.get("authorization"))
        sessions = await self._controller.sessions.remote()
        nodes = [node_json(n) for n in self.table.nodes]
        return json_response({"version": self.table.version, "nodes": nodes, "sessions": sessions})

    @api.get("/admin/models")
    async def admin_models(self, request: Request) -> Response:
        """Every model any node has, with the nodes serving it, and desired vs actual."""
        self.gate.admin(request.headers.get("authorization"))
        desired = await self._controller.deployments.remote()
        return json_response({"models": merged_models(models_json(self.table), desired)})

    @api.post("/admin/deployments")
    async def admin_deploy(self, request: Request) -> Response:
        """Deploy a model (or, with dry_run, only show where it would go)."""
        self.gate.admin(request.headers.get("authorization"))
        spec, dry_run = parse_deploy(
            await request.body(), lambda ref: find_node(self.table, ref).node_id
        )
        return json_response(raise_error(await self._controller.deploy.remote(spec, dry_run)))

    @api.post("/admin/undeploy")
    async def admin_undeploy(self, request: Request) -> Response:
        """Unload every replica of a deployed model."""
        self.gate.admin(request.headers.get("authorization"))
        name = parse_model_name(await request.body())
        return json_response(raise_error(await self._controller.undeploy.remote(name)))

    @api.post("/admin/rebalance")
    async def admin_rebalance(
        self, request: Request, since: str = "1h", dry_run: bool = False
    ) -> Response:
        """Move replicas toward recent demand; with dry_run, only show the moves."""
        self.gate.admin(request.headers.get("authorization"))
        window_seconds(since)
        return json_response(raise_error(await self._controller.rebalance.remote(since, dry_run)))

    @api.post("/admin/nodes/{node}/drain")
    async def admin_drain(self, request: Request, node: str) -> Response:
        """Stop sending new requests to a node; in-flight ones finish."""
        self.gate.admin(request.headers.get("authorization"))
        return await self._set_draining(node, True)

    @api.post("/admin/nodes/{node}/uncordon")
    async def admin_uncordon(self, request: Request, node: str) -> Response:
        """Undo a drain."""
        self.gate.admin(request.headers.get("authorization"))
        return await self._set_draining(node, False)

    @api.get("/admin/cost")
    async def admin_cost(self, request: Request, since: str = "24h") -> Response:
        """Per node and in total: tokens, busy %, cost, $/Mtok, cloud-equivalent, breakeven."""
        self.gate.admin(request.headers.get("authorization"))
        window_seconds(since)
        return json_response(await self._controller.cost_report.remote(since))

    @api.get("/admin/usage")
    async def admin_usage(
        self, request: Request, since: str = "24h", by: str = "model"
    ) -> Response:
        """Requests and tokens per model, node or key."""
        self.gate.admin(request.headers.get("authorization"))
        window_seconds(since)
        if by not in GROUPS:
            raise InvalidRequest(f"by: one of {', '.join(GROUPS)}", param="by")
        return json_response(await self._controller.usage_report.remote(since, by))

    @api.post("/admin/nodes/{node}/cost")
    async def admin_set_cost(self, node: str, request: Request) -> Response:
        """Set a node's cost profile (the fields given); it wins over the agent's flags."""
        self.gate.admin(request.headers.get("authorization"))
        found = find_node(self.table, node)
        changes = parse_cost_changes(await request.body())
        return json_response(await self._controller.set_cost.remote(found.node_id, changes))

    @api.post("/admin/ledger/flush")
    async def admin_flush(self, request: Request, timeout_s: float = 10.0) -> Response:
        """For `cluster up`'s clean stop: refuse new requests, wait for every usage row."""
        token = request.headers.get("x-meterless-shutdown-token", "")
        done = await self._controller.prepare_shutdown.remote(token, timeout_s)
        if done is None:
            raise Forbidden("only the `cluster up` running this cluster may stop it")
        return json_response(done)

    @api.get("/admin/keys")
    async def admin_keys(self, request: Request) -> Response:
        """Every API key (live and revoked), without secrets or hashes."""
        self.gate.admin(request.headers.get("authorization"))
        return json_response({"keys": await self._controller.list_keys.remote()})

    @api.post("/admin/keys")
    async def admin_create_key(self, request: Request) -> Response:
        """Make a key; the answer holds the full key, which is never shown again."""
        self.gate.admin(request.headers.get("authorization"))
        fields = parse_key_request(await request.body())
        return json_response(_raised(await self._controller.create_key.remote(*fields)))

    @api.post("/admin/keys/{name}/revoke")
    async def admin_revoke_key(self, request: Request, name: str) -> Response:
        """Revoke a key; every gateway refuses it once the controller's push arrives."""
        self.gate.admin(request.headers.get("authorization"))
        return json_response(_raised(await self._controller.revoke_key.remote(name)))

    @api.get("/metrics")
    async def metrics(self, request: Request) -> Response:
        """Prometheus metrics: the cluster's requests, nodes and costs."""
        self.gate.metrics(request.headers.get("authorization"))
        snapshot = await self._controller.metrics_snapshot.remote()
        return Response(render(snapshot, self.table), media_type=CONTENT_TYPE)

    async def _set_draining(self, node: str, draining: bool) -> Response:
        found = find_node(self.table, node)
        self.table = await self._controller.set_draining.remote(found.node_id, draining)
        return json_response({"node": node_json(self.table.get(found.node_id) or found)})

    async def _complete(
        self, req: AnyRequest, keys: tuple[int, ...], chars: int, authorization: str | None
    ) -> Answer:
        self.meter.check_open()
        request_id = new_request_id()
        generate = to_generate_request(req, request_id)
        route = RouteRequest(
            ModelName(req.model),
            expected_tokens(chars, req.output_limit, self.settings.default_max_tokens),
            keys,
        )
        chat = isinstance(req, ChatCompletionRequest)
        grant = self.gate.let_in(authorization, req.model)  # 401/403/429; holds a slot from here
        info = RequestInfo(
            request_id=request_id,
            model=req.model,
            stream=bool(req.stream),
            endpoint="chat" if chat else "completions",
            key_id=grant.key_id,
        )
        tap = self.meter.tap(info)
        events = self.gate.hold(grant, self.forwarder.stream(self.table, generate, route, tap))
        routed = await anext(events)  # raises ApiError before anything is sent
        assert isinstance(routed, Routed)
        # Not x-request-id: Serve's proxy adds its own id under that name to every response.
        headers = {"x-meterless-node": routed.node_id, "x-meterless-request-id": request_id}
        if req.stream:
            body = sse_frames(req, request_id, self.created, events)
            return front.EventStream(body, headers)
        return await collect(req, request_id, self.created, events, headers)
