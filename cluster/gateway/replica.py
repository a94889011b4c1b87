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
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from ray import serve

from cluster.access.keys import Grant, visible_models
from cluster.access.request_gate import RequestGate
from cluster.deployments.aliases import resolve_in
from cluster.errors import ApiError, InternalError, InvalidRequest, ModelNotFound
from cluster.gateway import admin, catalog, front
from cluster.gateway.anthropic import encode as anthropic_encode
from cluster.gateway.anthropic import parse as anthropic_parse
from cluster.gateway.anthropic import response as anthropic_response
from cluster.gateway.choices import choice_events, started
from cluster.gateway.client_family import client_of
from cluster.gateway.clients import ClientPool
from cluster.gateway.forward import Forwarder, ForwardSettings, Routed
from cluster.gateway.intake import chat_route, credentials, speaks_anthropic
from cluster.gateway.openai.embeddings import embedding_list, parse_embedding_request
from cluster.gateway.openai.parse import (
    AnyRequest,
    ChatCompletionRequest,
    CompletionRequest,
    parse_request,
    to_generate_request,
    validation_error_to_api,
)
from cluster.gateway.openai.response import (
    Answer,
    Events,
    collect,
    json_response,
    sse_frames,
)
from cluster.gateway.opening import Opening
from cluster.gateway.prefix_keys import (
    prefix_keys_for_messages,
    prefix_keys_for_text,
    session_id,
    with_session,
)
from cluster.gateway.rented import Renting
from cluster.gateway.responses import parse as responses_parse
from cluster.gateway.responses import response as responses_response
from cluster.gateway.routing import RouteRequest, expected_tokens, make_router
from cluster.gateway.tally import GatewayMeter, RequestInfo
from cluster.gateway.ui import routes as ui_routes
from cluster.gateway.ui.session import Sessions
from cluster.gateway.upstream import Events as ForwardEvents
from cluster.gateway.upstream import Upstreams
from cluster.ledger.metrics import CONTENT_TYPE, render
from cluster.ledger.rows import UsageAck, UsageBatch, new_request_id
from cluster.providers.book import RouteBook, Upstream
from cluster.types import ModelName, NodeTable
from node_agent.trust import ClusterSecret
from node_agent.types import GenerateRequest

logger = logging.getLogger(__name__)

# Allocations between two young-generation collections in a gateway replica (Python's default is
# 700). Serve freezes the startup heap, and what a request allocates dies young, so the default
# collects the same in-flight requests' objects over and over: about 58 us of collector time a
# request. Switching the same replica between 700 and this, round by round, it used 63 and 84 us
# (4-5%) less CPU a request, with no change in what the collections free.
GC_YOUNG_THRESHOLD = 10_000
PRICES_TTL_S = 60.0  # how long /v1/models shows the ledger's $/Mtok before asking again

api = FastAPI(title="meterless", docs_url=None, redoc_url=None)
api.include_router(admin.router)
api.include_router(ui_routes.router)


@api.exception_handler(ApiError)
async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
    body = anthropic_encode.error_body(exc) if speaks_anthropic(request) else exc.body()
    return JSONResponse(body, status_code=exc.status, headers=exc.headers())


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
    idle_timeout_s: float = 120.0  # between events once the first token came (forward.py)
    max_attempts: int = 3
    default_max_tokens: int = 256
    ledger: bool = True  # record one usage row per request (off only to measure what it costs)
    keys_required: bool = False  # see cluster/access/exposure.py for when `cluster up` sets it
    admin_digest: str = ""  # SHA-256 of the admin token; "": the admin API refuses everyone
    metrics_open: bool = True  # /metrics without the admin token
    max_body_bytes: int = front.DEFAULT_LIMITS.max_bytes  # a completion's body; 413 past it
    body_timeout_s: float = front.DEFAULT_LIMITS.read_timeout_s  # to read that body; 408 past it
    cluster_secret: ClusterSecret | None = field(default=None, repr=False)  # TLS to the agents
    config_dir: str = ""  # where `cluster route` keeps the models rented from providers
    local_only: bool = False  # `cluster up --local-only`: no request goes to a provider


def router_knobs(settings: GatewaySettings) -> dict[str, object]:
    """Keyword arguments for the chosen policy: only `fastest` has prefix affinity to turn off."""
    return {"affinity": settings.affinity} if settings.routing == "fastest" else {}


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
                idle_timeout_s=settings.idle_timeout_s,
                max_attempts=settings.max_attempts,
            ),
        )
        self.created = int(time.time())
        self.renting = Renting(
            RouteBook(Path(settings.config_dir) if settings.config_dir else None)
        )
        self._prices: tuple[float, dict[str, float]] = (-PRICES_TTL_S, {})
        self._poller = asyncio.get_running_loop().create_task(self._follow_table())
        self.meter = GatewayMeter(self._send_usage if settings.ledger else None)
        self.meter.start()
        self.upstreams = Upstreams(self.forwarder, self.renting, self.meter.tap)
        self.gate = RequestGate(
            keys_required=settings.keys_required,
            admin_digest=settings.admin_digest,
            metrics_open=settings.metrics_open,
            local_only=settings.local_only,
        )
        self._key_poller = asyncio.get_running_loop().create_task(self.gate.follow(self._wait_keys))
        secret = settings.cluster_secret.secret if settings.cluster_secret else b""
        self.sessions = Sessions.derived(settings.admin_digest, secret)  # the dashboard's
        gc.set_threshold(GC_YOUNG_THRESHOLD)  # the older generations keep their defaults

    def __serve_build_asgi_app__(self) -> front.Front:
        """The replica's ASGI app: the completion routes answered in front of FastAPI, which
        serves the rest. Serve calls this after the constructor, on the app it was given."""
        fastapi_app = self.app  # type: ignore[attr-defined]  # set by Serve's ingress wrapper
        fastapi_app.state.replica = self  # for the admin routes (gateway/admin.py)
        limits = front.IntakeLimits(
            max_bytes=self.settings.max_body_bytes, read_timeout_s=self.settings.body_timeout_s
        )
        return front.Front(
            fastapi_app,
            replica=self,
            on_api_error=_api_error,
            on_unexpected=_unexpected,
            admit=lambda request: self.gate.identify(credentials(request)),  # 401 before the body
            limits=limits,
        )

    async def admin(self, operation: str, *args: Any) -> Any:
        """Run a controller admin operation (gateway/admin.py's routes); raise its ApiError."""
        return admin.raised(await self._controller.admin.remote(operation, *args))

    async def prepare_shutdown(self, token: str, timeout_s: float) -> dict[str, Any] | None:
        """Ask the controller for a clean stop (None: the token is not `cluster up`'s)."""
        return await self._controller.prepare_shutdown.remote(token, timeout_s)  # type: ignore[no-any-return]

    async def _start_error(self) -> str | None:
        try:
            return await asyncio.wait_for(self._controller.start_error.remote(), 2.0)
        except Exception:  # the controller itself not up yet: nothing to say
            return None

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
        body = await request.body()
        req = parse_request(ChatCompletionRequest, body)
        upstream = self.renting.book.lookup(req.model)
        if upstream is not None and upstream.provider.kind == "openai":  # passed on as it is
            return await self._rent(upstream, req, body, request)
        parts = req.key_parts()
        chars = sum(len(text) for _, text in parts)
        extra = req.model_extra or {}
        session = session_id(request.headers, extra.get("prompt_cache_key"), req.user)
        keys = with_session(prefix_keys_for_messages(parts), session)
        return await self._complete(req, keys, chars, request)

    async def completions(self, request: Request) -> Answer:
        """OpenAI text completions, streamed or not (POST /v1/completions: front.Front)."""
        req = parse_request(CompletionRequest, await request.body())
        return await self._complete(req, prefix_keys_for_text(req.prompt), len(req.prompt), request)

    async def messages(self, request: Request) -> Answer:
        """Anthropic Messages, streamed or not (POST /v1/messages: front.Front)."""
        req = anthropic_parse.parse_messages(await request.body())
        request_id = new_request_id()
        generate = anthropic_parse.to_generate_request(req, request_id)
        generate = self._resolved(generate, credentials(request))
        session = session_id(request.headers, (req.metadata or {}).get("user_id"))
        route = chat_route(generate, req.key_parts(), req.max_tokens, session)
        info = RequestInfo(request_id, generate.model, "messages", bool(req.stream))
        info = info._replace(requested_model=req.model, client=client_of(request))
        opening = self._open(generate, route, info, credentials(request))
        return await anthropic_response.answer(opening, request_id, req.model, bool(req.stream))

    async def responses(self, request: Request) -> Answer:
        """The Responses API, stateless, streamed or not (POST /v1/responses: front.Front)."""
        req = responses_parse.parse_response_request(await request.body())
        request_id = new_request_id()
        generate = responses_parse.to_generate_request(req, request_id)
        generate = self._resolved(generate, credentials(request))
        session = session_id(request.headers, req.prompt_cache_key, req.user)
        route = chat_route(generate, req.key_parts(), req.max_output_tokens, session)
        info = RequestInfo(request_id, generate.model, "responses", bool(req.stream))
        info = info._replace(requested_model=req.model, client=client_of(request))
        opening = self._open(generate, route, info, credentials(request))
        return await responses_response.answer(opening, req, request_id, int(time.time()))

    async def count_tokens(self, request: Request) -> Response:
        """Anthropic's token count, by a node serving the model (POST /v1/messages/count_tokens)."""
        req = anthropic_parse.parse_count_tokens(await request.body())
        generate = anthropic_parse.to_generate_request(req, new_request_id())
        generate = self._resolved(generate, credentials(request))
        route = RouteRequest(ModelName(generate.model), 1, (), generate.needs())
        grant = self.gate.let_in(credentials(request), generate.model)
        try:
            tokens = await self.forwarder.count_tokens(self.table, generate, route)
        finally:
            self.gate.release(grant)
        return json_response(anthropic_encode.count_tokens_body(tokens))

    async def embeddings(self, request: Request) -> Response:
        """OpenAI embeddings, by a node whose model makes them (POST /v1/embeddings)."""
        req = parse_embedding_request(await request.body())
        self.meter.check_open()
        request_id = new_request_id()
        model = self._served(req.model, credentials(request))
        route = RouteRequest(model, expected_tokens(sum(map(len, req.input)), 1))
        grant = self.gate.let_in(credentials(request), model)
        info = RequestInfo(
            request_id=request_id,
            model=model,
            endpoint="embeddings",
            stream=False,
            key_id=grant.key_id,
            requested_model=req.model,
            client=client_of(request),
        )
        try:
            node_id, got = await self.forwarder.embed(
                self.table, model, req.input, route, self.meter.tap(info)
            )
        finally:
            self.gate.release(grant)
        req.check_dimensions(got.vectors)
        body = embedding_list(req.model, got.vectors, got.prompt_tokens, req.encoding_format)
        return json_response(
            body, {"x-meterless-node": node_id, "x-meterless-request-id": request_id}
        )

    @api.get("/v1/models")
    async def models(self, request: Request) -> Response:
        """Every model at least one ready node serves and the request's key may use, then the
        exact aliases of those (and, for OpenAI's clients, the models rented from providers),
        in Anthropic's list shape for Anthropic's clients."""
        grant = self.gate.identify(credentials(request))
        models = visible_models(grant, self.table.models())
        if speaks_anthropic(request):
            return json_response(catalog.anthropic_list(self.table, models, self.created))
        prices = await self._model_prices()
        routed = self.renting.book.routed() if self.gate.may_rent(grant) else {}
        rented = {m: p for m, p in routed.items() if visible_models(grant, [m])}
        return json_response(catalog.openai_list(self.table, models, self.created, prices, rented))

    @api.get("/health")
    async def health(self) -> Response:
        """Liveness of this replica, with what it can serve; 503 with the reason while the
        controller cannot start (before the first node table only: a cheap call after)."""
        if self.table.version == 0 and (why := await self._start_error()):
            answer = json_response(
                {"status": "unavailable", "reason": f"the controller cannot start: {why}"}
            )
            answer.status_code = 503
            return answer
        ready = [n for n in self.table.nodes if n.routable]
        return json_response(
            {"status": "ok", "nodes_ready": len(ready), "models": self.table.models()}
        )

    @api.get("/metrics")
    async def metrics(self, request: Request) -> Response:
        """Prometheus metrics: the cluster's requests, nodes and costs."""
        self.gate.metrics(request.headers.get("authorization"))
        snapshot = await self._controller.metrics_snapshot.remote()
        return Response(render(snapshot, self.table), media_type=CONTENT_TYPE)

    async def _model_prices(self) -> dict[str, float]:
        """Each model's measured $/Mtok from the ledger, asked at most once a PRICES_TTL_S."""
        now = time.monotonic()
        if now - self._prices[0] > PRICES_TTL_S:
            try:
                self._prices = (now, await self._controller.model_prices.remote())
            except Exception as exc:  # the controller restarting: the last figures will do
                logger.warning("model prices unavailable: %s", exc)
        return self._prices[1]

    async def _complete(
        self, req: AnyRequest, keys: tuple[int, ...], chars: int, request: Request
    ) -> Answer:
        self.meter.check_open()
        authorization = credentials(request)
        request_id = new_request_id()
        generate = self._resolved(to_generate_request(req, request_id), authorization)
        route = RouteRequest(
            ModelName(generate.model),
            expected_tokens(chars, req.output_limit, self.settings.default_max_tokens),
            keys,
            generate.needs(),
            chars,
        )
        chat = isinstance(req, ChatCompletionRequest)
        grant, served = self._let_in(authorization, generate.model)  # 401/403/429; holds a slot
        info = RequestInfo(
            request_id=request_id,
            model=generate.model,
            requested_model=req.model,
            stream=bool(req.stream),
            endpoint="chat" if chat else "completions",
            key_id=grant.key_id,
            client=client_of(request),
        )
        events, nodes = await self._start(generate, req.choices, route, info, grant, served)
        # Not x-request-id: Serve's proxy adds its own id under that name to every response.
        headers = {"x-meterless-node": nodes, "x-meterless-request-id": request_id}
        if req.stream:
            body = sse_frames(req, request_id, self.created, events)
            return front.EventStream(body, headers)
        return await collect(req, request_id, self.created, events, headers)

    async def _rent(
        self, upstream: Upstream, req: ChatCompletionRequest, body: bytes, request: Request
    ) -> Answer:
        """A chat request for a model a provider serves (`cluster route`), sent on to it."""
        self.meter.check_open()
        auth = credentials(request)
        grant = self.gate.let_in(auth, req.model, upstream.provider.name)  # 401/403/429; a slot
        model = upstream.route.remote_model  # recorded as served, the name asked for beside it
        client = client_of(request)
        info = RequestInfo(
            new_request_id(), model, "chat", bool(req.stream), grant.key_id, req.model, client
        )
        return await self.renting.answer(upstream, body, self.gate, grant, self.meter.tap(info))

    def _resolved(self, generate: GenerateRequest, authorization: str | None) -> GenerateRequest:
        """`generate` for the model its name resolves to (cluster/deployments/aliases.py); the
        answer still carries the name asked for, as clients expect. A key's model limits apply
        to the model served."""
        try:
            model = self._served(generate.model, authorization)
        except ModelNotFound:
            if self.renting.book.find(generate.model) is None:
                raise
            return generate  # rented, or overflowing while no local node serves it
        return generate if model == generate.model else replace(generate, model=model)

    def _served(self, name: str, authorization: str | None) -> ModelName:
        """The model `name` resolves to, aliases applied (see `_resolved`)."""
        try:
            return resolve_in(self.table, name)
        except ModelNotFound:
            self.gate.identify(authorization)  # a stranger gets its 401, not the alias's target
            raise

    def _open(
        self,
        generate: GenerateRequest,
        route: RouteRequest,
        info: RequestInfo,
        authorization: str | None,
    ) -> Opening:
        """Let the request in (401/403/429) and start forwarding it, tallied for the ledger."""
        self.meter.check_open()
        grant, served = self._let_in(authorization, generate.model)  # holds a slot from here
        info = info._replace(key_id=grant.key_id)
        return Opening(self.gate.hold(grant, self._events(generate, route, info, grant, served)))

    def _let_in(self, authorization: str | None, model: str) -> tuple[Grant, Upstream | None]:
        """Let the request in (401/403/429; a local-only key is refused a model only a
        provider serves), and the provider that serves its model, if one does."""
        served = self.renting.book.lookup(model)
        provider = None if served is None else served.provider.name
        return self.gate.let_in(authorization, model, provider), served

    def _events(
        self,
        generate: GenerateRequest,
        route: RouteRequest,
        info: RequestInfo,
        grant: Grant,
        served: Upstream | None,
    ) -> ForwardEvents:
        """The request's events: from the provider that serves its model, or from local nodes
        (overflowing where its model's route says)."""
        if served is not None:
            return self.upstreams.rented(served, generate, info._replace(key_id=grant.key_id))
        may_rent = self.gate.may_rent(grant)
        return self.upstreams.events(self.table, generate, route, info, may_rent=may_rent)

    async def _start(
        self,
        generate: GenerateRequest,
        n: int,
        route: RouteRequest,
        info: RequestInfo,
        grant: Grant,
        served: Upstream | None = None,
    ) -> tuple[Events, str]:
        """The request's events once each of its `n` choices has a node (an ApiError before
        then is raised, nothing having been sent), and those nodes' ids."""
        if served is not None and n > 1:
            self.gate.release(grant)
            raise InvalidRequest(f"`{info.requested_model}` is rented: ask for one choice (n=1)")
        if n == 1:
            events = self.gate.hold(grant, self._events(generate, route, info, grant, served))
            routed = await anext(events)
            assert isinstance(routed, Routed)
            return events, routed.node_id
        # A tally, so a ledger row, per choice, under the choice's own request id.
        choices = choice_events(
            self.forwarder,
            self.table,
            generate,
            n,
            route,
            lambda sample_id: self.meter.tap(info._replace(request_id=sample_id)),
            whole=not info.stream,
        )
        sampled, merged = await started(self.gate.hold(grant, choices), n)
        return merged, ",".join(dict.fromkeys(r.node_id for r in sampled))
