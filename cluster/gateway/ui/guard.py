"""Who may use the dashboard's calls: a signed-in session, and for a change, its CSRF token.

The admin API takes either the admin token (the CLI) or a session (the pages); the dashboard's
data calls take a session only.
"""

from __future__ import annotations

import time

from starlette.requests import Request

from cluster.errors import Forbidden, Unauthorized
from cluster.gateway.ui.session import (
    COOKIE,
    CSRF_HEADER,
    SAFE_METHODS,
    Sessions,
    same_origin,
)


def has_session(request: Request) -> bool:
    """Whether the request carries a session cookie (and no Authorization header to prefer)."""
    return COOKIE in request.cookies and "authorization" not in request.headers


def signed_in(sessions: Sessions, request: Request) -> None:
    """Raise 401 without a live session; 403 for a change sent cross-site or without the
    session's CSRF token."""
    session = request.cookies.get(COOKIE)
    if session is None or not sessions.valid(session, time.time()):
        raise Unauthorized("Sign in to the dashboard with the admin token.", code="not_signed_in")
    if request.method in SAFE_METHODS:
        return
    if not same_origin(request.headers.get("origin"), request.headers.get("host")):
        raise Forbidden("a change must come from the dashboard's own pages", code="cross_site")
    if not sessions.csrf_ok(session, request.headers.get(CSRF_HEADER)):
        raise Forbidden("a change needs the dashboard's CSRF token", code="csrf")
