"""The agent's door: TLS credentials from the cluster secret, and a check of every call's signature.

TLS (client certificate required, the cluster certificate the only trusted root) keeps out anyone
without the secret before a byte of a request is read; the interceptor then refuses a call whose
signature is missing, wrong, stale or replayed (see node_agent/trust.py), with UNAUTHENTICATED.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
import grpc.aio

from node_agent.trust import SIGNATURE_HEADER, CallVerifier, ClusterSecret

logger = logging.getLogger(__name__)


def server_credentials(secret: ClusterSecret) -> grpc.ServerCredentials:
    """Serve with the cluster certificate; accept only clients that present it too."""
    return grpc.ssl_server_credentials(
        [(secret.private_key_pem, secret.certificate_pem)],
        root_certificates=secret.certificate_pem,
        require_client_auth=True,
    )


class CallGuard(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """Refuses every call that does not carry a fresh, valid signature."""

    def __init__(self, secret: ClusterSecret, clock: Callable[[], float] = time.time) -> None:
        self._verifier = CallVerifier(secret)
        self._clock = clock

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        """The real handler for a well-signed call, else one that answers UNAUTHENTICATED."""
        handler = await continuation(handler_call_details)
        method = handler_call_details.method
        header = dict(handler_call_details.invocation_metadata or ()).get(SIGNATURE_HEADER)
        reason = self._verifier.check(
            method, header if isinstance(header, str) else None, now=self._clock()
        )
        if reason is None or handler is None:
            return handler
        logger.warning("refused %s: %s", method, reason)
        return _refusal(handler, reason)


def _refusal(handler: grpc.RpcMethodHandler, reason: str) -> grpc.RpcMethodHandler:
    """A handler of the same shape as `handler` that only aborts with UNAUTHENTICATED."""

    async def refuse(request: Any, context: grpc.aio.ServicerContext) -> None:
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, reason)

    async def refuse_stream(request: Any, context: grpc.aio.ServicerContext) -> Any:
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, reason)
        yield  # pragma: no cover - abort raises; this only makes it an async generator

    codec = {
        "request_deserializer": handler.request_deserializer,
        "response_serializer": handler.response_serializer,
    }
    if handler.request_streaming and handler.response_streaming:
        return grpc.stream_stream_rpc_method_handler(refuse_stream, **codec)
    if handler.request_streaming:
        return grpc.stream_unary_rpc_method_handler(refuse, **codec)
    if handler.response_streaming:
        return grpc.unary_stream_rpc_method_handler(refuse_stream, **codec)
    return grpc.unary_unary_rpc_method_handler(refuse, **codec)
