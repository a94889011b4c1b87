"""The API errors (errors.py): each one's status, OpenAI-shaped body, and retry headers."""

from __future__ import annotations

import pytest

from cluster.errors import (
    ApiError,
    Forbidden,
    InternalError,
    InvalidRequest,
    ModelNotFound,
    NoCapacity,
    PayloadTooLarge,
    RateLimited,
    RequestTimeout,
    Unauthorized,
    UpstreamFailed,
    UpstreamTimeout,
)

ERRORS = [
    (InvalidRequest("bad", param="temperature"), 400, "invalid_request_error", None),
    (Unauthorized("no key"), 401, "invalid_request_error", "invalid_api_key"),
    (Forbidden("not yours"), 403, "invalid_request_error", "forbidden"),
    (ModelNotFound("no such model"), 404, "invalid_request_error", "model_not_found"),
    (RequestTimeout("too slow"), 408, "invalid_request_error", "request_timeout"),
    (PayloadTooLarge("too big"), 413, "invalid_request_error", "request_too_large"),
    (RateLimited("slow down", retry_after=1.5), 429, "requests", "rate_limit_exceeded"),
    (InternalError("bug"), 500, "server_error", None),
    (UpstreamFailed("node died"), 502, "server_error", "upstream_failed"),
    (NoCapacity("full", retry_after=2), 503, "server_error", "no_capacity"),
    (UpstreamTimeout("slow node"), 504, "server_error", "upstream_timeout"),
]


@pytest.mark.parametrize(("error", "status", "kind", "code"), ERRORS)
def test_error_body_and_status(error: ApiError, status: int, kind: str, code: str | None) -> None:
    assert error.status == status
    assert error.body() == {
        "error": {"message": str(error), "type": kind, "param": error.param, "code": code}
    }


def test_retry_after_headers() -> None:
    assert RateLimited("x", retry_after=1.5).headers() == {
        "Retry-After": "2",
        "retry-after-ms": "1500",
    }
    assert NoCapacity("x").headers() == {}
    assert UpstreamFailed("x").headers() == {}
