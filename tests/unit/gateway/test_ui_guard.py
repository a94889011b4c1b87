"""Who the dashboard's guard lets through: a live session; a change only with its CSRF token and
from the same origin; and the admin token is preferred where a request carries both."""

from __future__ import annotations

import time

import pytest
from starlette.requests import Request

from cluster.errors import Forbidden, Unauthorized
from cluster.gateway.ui import guard
from cluster.gateway.ui.session import COOKIE, Sessions

SESSIONS = Sessions.derived("digest", b"secret")


def request(method: str = "GET", cookie: str | None = None, **headers: str) -> Request:
    """A request to the head at `head:8000` with these headers (underscores as dashes)."""
    raw = [(b"host", b"head:8000")]
    raw += [(k.replace("_", "-").encode(), v.encode()) for k, v in headers.items()]
    if cookie is not None:
        raw.append((b"cookie", f"{COOKIE}={cookie}".encode()))
    return Request({"type": "http", "method": method, "path": "/", "headers": raw})


def test_a_read_needs_a_live_session() -> None:
    session = SESSIONS.issue(time.time())
    guard.signed_in(SESSIONS, request(cookie=session))
    for cookie in (None, "", "1.2.3", SESSIONS.issue(time.time() - 10 * 86_400)):
        with pytest.raises(Unauthorized):
            guard.signed_in(SESSIONS, request(cookie=cookie))


def test_a_change_needs_the_csrf_token_and_the_same_origin() -> None:
    session = SESSIONS.issue(time.time())
    csrf = SESSIONS.csrf(session)
    guard.signed_in(SESSIONS, request("POST", session, x_csrf_token=csrf))
    guard.signed_in(
        SESSIONS, request("POST", session, x_csrf_token=csrf, origin="http://head:8000")
    )
    refused = [
        request("POST", session),
        request("POST", session, x_csrf_token="0" * 64),
        request("POST", session, x_csrf_token=csrf, origin="http://evil.example"),
    ]
    for r in refused:
        with pytest.raises(Forbidden):
            guard.signed_in(SESSIONS, r)


def test_the_admin_token_wins_over_a_session() -> None:
    session = SESSIONS.issue(time.time())
    assert guard.has_session(request(cookie=session))
    assert not guard.has_session(request(cookie=session, authorization="Bearer ml-admin-x"))
    assert not guard.has_session(request())
