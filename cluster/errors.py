"""Errors the gateway reports to clients, each rendered as OpenAI renders its own.

    ApiError                    base; status 500, type "server_error"
    ├── InvalidRequest          400  the body does not parse or asks for what we do not support
    ├── Unauthorized            401  missing or wrong API key
    ├── Forbidden               403  the key may not use this model or endpoint
    ├── NotFound                404  an admin API object (a node) that does not exist
    │   └── ModelNotFound       404  no node serves the model
    ├── RequestTimeout          408  the body did not arrive within the read deadline
    ├── PayloadTooLarge         413  the body is over the gateway's cap
    ├── RateLimited             429  the key is over its limit; carries retry_after
    ├── InternalError           500  a bug; the one handler's fallback for anything unexpected
    ├── UpstreamFailed          502  the node failed the generation
    ├── NoCapacity              503  nodes serve the model but none can take the request now;
    │                                carries retry_after
    ├── Unavailable             503  an admin operation needs what cannot work now (a ledger
    │                                on a full disk); carries retry_after
    └── UpstreamTimeout         504  the node did not answer in time

node_client.py is the only module that sees gRPC errors: it translates them once into its own
NodeError tree, and the forwarder (gateway/forward.py) maps those to these after failover. The
gateway turns any ApiError into `{"error": {...}}` JSON with `status` and `headers()` in its one
exception handler. An ApiError crosses Serve handles as a returned value, never raised.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar


class ApiError(Exception):
    """Base of every error a client sees; knows its HTTP status and its JSON body."""

    status: ClassVar[int] = 500
    error_type: ClassVar[str] = "server_error"
    default_code: ClassVar[str | None] = None

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code if code is not None else self.default_code

    def body(self) -> dict[str, Any]:
        """The OpenAI error object: `{"error": {"message", "type", "param", "code"}}`."""
        return {
            "error": {
                "message": self.message,
                "type": self.error_type,
                "param": self.param,
                "code": self.code,
            }
        }

    def headers(self) -> dict[str, str]:
        """Extra response headers this error needs (none by default)."""
        return {}


class _Retryable(ApiError):
    """An error the client should retry after `retry_after` seconds, when that is known."""

    def __init__(
        self,
        message: str,
        *,
        retry_after: float | None = None,
        param: str | None = None,
        code: str | None = None,
    ) -> None:
        super().__init__(message, param=param, code=code)
        self.retry_after = retry_after

    def headers(self) -> dict[str, str]:
        """`Retry-After` in whole seconds (HTTP allows no fractions) plus the exact milliseconds."""
        if self.retry_after is None:
            return {}
        seconds = max(0.0, self.retry_after)
        # The official clients read retry-after-ms first, so they wait no longer than needed.
        return {"Retry-After": str(math.ceil(seconds)), "retry-after-ms": str(round(seconds * 1e3))}


class InvalidRequest(ApiError):
    """The request is malformed, out of range, or asks for a feature meterless lacks."""

    status = 400
    error_type = "invalid_request_error"


class Unauthorized(ApiError):
    """No API key, or one the cluster does not know."""

    status = 401
    error_type = "invalid_request_error"
    default_code = "invalid_api_key"


class Forbidden(ApiError):
    """The key is valid but may not do this."""

    status = 403
    error_type = "invalid_request_error"
    default_code = "forbidden"


class NotFound(ApiError):
    """The thing an admin call names does not exist."""

    status = 404
    error_type = "invalid_request_error"
    default_code = "not_found"


class MethodNotAllowed(ApiError):
    """The path exists, but not for this HTTP method."""

    status = 405
    error_type = "invalid_request_error"
    default_code = "method_not_allowed"


class ModelNotFound(NotFound):
    """No routable node serves the requested model."""

    status = 404
    error_type = "invalid_request_error"
    default_code = "model_not_found"


class RequestTimeout(ApiError):
    """The body did not arrive within the gateway's read deadline."""

    status = 408
    error_type = "invalid_request_error"
    default_code = "request_timeout"


class PayloadTooLarge(ApiError):
    """The body is larger than the gateway accepts."""

    status = 413
    error_type = "invalid_request_error"
    default_code = "request_too_large"


class RateLimited(_Retryable):
    """The key has used its share; try again after `retry_after` seconds."""

    status = 429
    error_type = "requests"
    default_code = "rate_limit_exceeded"


class InternalError(ApiError):
    """Something went wrong inside the gateway itself."""

    status = 500


class UpstreamFailed(ApiError):
    """The node serving the request failed it."""

    status = 502
    default_code = "upstream_failed"


class NoCapacity(_Retryable):
    """The model is served, but every node that has it is full or draining."""

    status = 503
    default_code = "no_capacity"


class Unavailable(_Retryable):
    """An admin operation cannot be done now (the ledger cannot write); try again later."""

    status = 503
    default_code = "unavailable"


class UpstreamTimeout(ApiError):
    """The node did not answer within the deadline."""

    status = 504
    default_code = "upstream_timeout"
