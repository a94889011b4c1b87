"""The dashboard's routes under /ui/: its files, sign-in and sign-out, and its data calls.

The pages are plain ES modules and CSS shipped in the package (static/), served as they are:
nothing is fetched from elsewhere. Each page refreshes with one call (`/ui/api/overview` every
few seconds); the Traffic and Money series are asked for when shown. The admin actions are the
admin API's own routes, which take the session cookie as they take the admin token.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import RedirectResponse, Response

from cluster.deployments.requests import merged_models
from cluster.errors import Forbidden, InvalidRequest, NotFound
from cluster.gateway.admin import AdminHost, models_json, node_json
from cluster.gateway.openai.response import json_response
from cluster.gateway.ui import guard
from cluster.gateway.ui.session import COOKIE, CSRF_COOKIE, LIFETIME_S, same_origin
from cluster.ledger.series import Span, traffic_csv

logger = logging.getLogger(__name__)

STATIC = Path(__file__).parent / "static"
TYPES = {
    ".html": "text/html",
    ".js": "text/javascript",
    ".css": "text/css",
    ".svg": "image/svg+xml",
}
FILES = {p.name: p for p in STATIC.iterdir() if p.suffix in TYPES}  # nothing else is served
RECENT_S = 300.0  # the live totals' window: TTFT p50/p95 and rates over the last five minutes
TRAFFIC_BY = ("model", "node", "key", "client", "outcome")
HEADERS = {"cache-control": "no-store", "x-content-type-options": "nosniff"}
PAGE_HEADERS = {
    **HEADERS,
    "content-security-policy": "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'",
    "x-frame-options": "DENY",
}

router = APIRouter(prefix="/ui")


def session_replica(request: Request) -> AdminHost:
    """The replica serving this request, once the request has shown a live session."""
    replica: AdminHost = request.app.state.replica
    guard.signed_in(replica.sessions, request)
    return replica


Signed = Annotated[AdminHost, Depends(session_replica)]


@router.get("")
async def root() -> Response:
    """/ui without its slash: the page is at /ui/."""
    return RedirectResponse("/ui/", status_code=308)


@router.get("/")
async def page() -> Response:
    """The single page; it asks for its data once signed in."""
    return _file("index.html")


@router.get("/static/{name}")
async def static(name: str) -> Response:
    """One of the page's files, by its name alone (no paths: nothing else can be named)."""
    return _file(name)


@router.post("/api/sign-in")
async def sign_in(request: Request) -> Response:
    """Trade the admin token for a session cookie (HttpOnly, SameSite=Strict, expiring)."""
    _same_site(request)
    replica: AdminHost = request.app.state.replica
    replica.gate.admin(f"Bearer {_token(await request.body())}")  # 401 for a wrong one
    session = replica.sessions.issue(time.time())
    answer = json_response({"signed_in": True, "expires_in_s": LIFETIME_S}, HEADERS)
    secure = request.url.scheme == "https"
    common: dict[str, Any] = {"max_age": LIFETIME_S, "path": "/", "secure": secure}
    answer.set_cookie(COOKIE, session, httponly=True, samesite="strict", **common)
    csrf = replica.sessions.csrf(session)
    answer.set_cookie(CSRF_COOKIE, csrf, httponly=False, samesite="strict", **common)
    return answer


@router.post("/api/sign-out")
async def sign_out(request: Request) -> Response:
    """Forget the session in this browser."""
    _same_site(request)
    answer = json_response({"signed_in": False}, HEADERS)
    for name in (COOKIE, CSRF_COOKIE):
        answer.delete_cookie(name, path="/", samesite="strict")
    return answer


@router.get("/api/overview")
async def overview(host: Signed) -> Response:
    """Everything the Overview and Models pages show, in one call: nodes, models, live totals,
    and whether the controller answers."""
    table = host.table
    problems = [] if table.version else ["the controller has not sent the node table yet"]
    desired: list[dict[str, Any]] = []
    recent: dict[str, Any] | None = None
    try:
        desired = await host.admin("deployments")
        recent = await host.admin("recent", RECENT_S)
    except Exception as exc:  # the controller restarting: show the nodes the gateway knows
        logger.warning("dashboard overview: the controller did not answer: %s", exc)
        problems.append("the controller is not answering")
    body = {
        "now": time.time(),
        "controller": {"ready": not problems, "problems": problems},
        "nodes": [node_json(n) for n in table.nodes],
        "models": merged_models(models_json(table), desired),
        "recent": recent,
    }
    return json_response(body, HEADERS)


@router.get("/api/traffic")
async def traffic(host: Signed, request: Request, by: str = "model") -> Response:
    """Requests, tokens, TTFT and outcomes over a range, by model, node, key or outcome; as
    CSV with `format=csv`."""
    if by not in TRAFFIC_BY:
        raise InvalidRequest(f"by: one of {', '.join(TRAFFIC_BY)}", param="by")
    report = await host.admin("traffic", _span(request), by)
    if request.query_params.get("format") == "csv":
        headers = {**HEADERS, "content-disposition": f'attachment; filename="traffic-{by}.csv"'}
        return Response(traffic_csv(report), media_type="text/csv", headers=headers)
    return json_response({"by": by, **report}, HEADERS)


@router.get("/api/money")
async def money(host: Signed, request: Request) -> Response:
    """Cumulative owned cost against cloud-equivalent over a range, and the all-time report."""
    return json_response(await host.admin("money", _span(request)), HEADERS)


def _span(request: Request) -> Span:
    """The range a series call asked for (`range`, and `from`/`to` for `custom`)."""
    q = request.query_params
    try:
        start, end = (float(q[k]) if q.get(k) else None for k in ("from", "to"))
    except ValueError:
        raise InvalidRequest("from/to: unix seconds", param="from") from None
    return Span.parse(q.get("range", "day"), start, end, time.time())


def _file(name: str) -> Response:
    path = FILES.get(name)
    if path is None:
        raise NotFound(f"no dashboard file {name!r}")
    return Response(path.read_bytes(), media_type=TYPES[path.suffix], headers=PAGE_HEADERS)


def _same_site(request: Request) -> None:
    if not same_origin(request.headers.get("origin"), request.headers.get("host")):
        raise Forbidden("sign in from the dashboard's own page", code="cross_site")


def _token(body: bytes) -> str:
    try:
        token = json.loads(body or b"{}").get("token")
    except (ValueError, AttributeError):
        raise InvalidRequest("the body is not a JSON object") from None
    if not isinstance(token, str) or not token.strip():
        raise InvalidRequest("give the admin token as `token`", param="token")
    return token.strip()
