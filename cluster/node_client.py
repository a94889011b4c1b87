"""The controller's and gateway's client for one node agent: the only place that sees gRPC errors.

Errors raised here (translated once, from grpc.aio.AioRpcError):

    NodeError                   base
    ├── NodeUnavailable         cannot reach the node, or it went away mid-call (failover-able)
    ├── NodeTimeout             the node did not answer in time (failover-able)
    ├── NodeModelMissing        the node does not have the model loaded (failover-able)
    ├── NodeRejected            the node refused the request as invalid (the client's fault)
    ├── NodeUnauthenticated     the node and this cluster do not share the secret (not failover-
    │                           able: the node is rejected, see the controller)
    └── NodeFailed              anything else the node reported

With a cluster secret, channels are TLS with the certificate derived from it (node_agent/trust.py)
and every call carries a fresh signature; without one they are plaintext, as before.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from dataclasses import dataclass

import grpc
import grpc.aio

from cluster.types import CostProfile
from node_agent import wire
from node_agent.proto import pb, pb_grpc
from node_agent.trust import SIGNATURE_HEADER, TLS_NAME, ClusterSecret
from node_agent.types import (
    DiskModel,
    Embeddings,
    GenerateEvent,
    GenerateRequest,
    LoadProgress,
    ModelInfo,
    ModelStatus,
)

logger = logging.getLogger(__name__)

CHANNEL_OPTIONS = (
    ("grpc.max_receive_message_length", 64 * 1024 * 1024),
    ("grpc.max_send_message_length", 64 * 1024 * 1024),
    ("grpc.keepalive_time_ms", 10_000),
    ("grpc.keepalive_timeout_ms", 5_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.max_pings_without_data", 0),
    ("grpc.initial_reconnect_backoff_ms", 200),
    ("grpc.max_reconnect_backoff_ms", 2_000),
)


class NodeError(Exception):
    """Base of every error a node call raises."""


class NodeUnavailable(NodeError):
    """The node could not be reached or dropped the call."""


class NodeTimeout(NodeError):
    """The node did not answer within the deadline."""


class NodeModelMissing(NodeError):
    """The node does not (or no longer) have the model loaded."""


class NodeRejected(NodeError):
    """The node rejected the request's content (bad sampling, prompt too long)."""


class NodePromptTooLong(NodeRejected):
    """The prompt does not fit the model's context on the node."""


class NodeUnauthenticated(NodeError):
    """The node failed to prove it holds the cluster secret, or refused ours."""


class NodeFailed(NodeError):
    """The node reported an error that fits none of the above."""


_CODE_TO_ERROR: dict[grpc.StatusCode, type[NodeError]] = {
    grpc.StatusCode.UNAVAILABLE: NodeUnavailable,
    grpc.StatusCode.CANCELLED: NodeUnavailable,
    grpc.StatusCode.DEADLINE_EXCEEDED: NodeTimeout,
    grpc.StatusCode.FAILED_PRECONDITION: NodeModelMissing,
    grpc.StatusCode.NOT_FOUND: NodeModelMissing,
    grpc.StatusCode.INVALID_ARGUMENT: NodeRejected,
    grpc.StatusCode.OUT_OF_RANGE: NodePromptTooLong,  # INVALID_ARGUMENT from older agents
    grpc.StatusCode.UNAUTHENTICATED: NodeUnauthenticated,
    grpc.StatusCode.PERMISSION_DENIED: NodeUnauthenticated,
}
_METHOD = "/meterless.agent.v1.Agent/"


PLAINTEXT_REASON = "speaks plaintext: started without the cluster's join token"
WRONG_SECRET_REASON = "failed the TLS handshake: it does not hold this cluster's secret"


def translate(exc: grpc.aio.AioRpcError, address: str) -> NodeError:
    """The domain error for a gRPC failure on the node at `address`."""
    details = exc.details() or exc.code().name
    if (reason := handshake_failure(details)) is not None:
        return NodeUnauthenticated(f"{address}: {reason}")
    kind = _CODE_TO_ERROR.get(exc.code(), NodeFailed)
    return kind(f"{address}: {details}")


def handshake_failure(details: str) -> str | None:
    """Why a TLS handshake failed, in the admin's words; None if `details` is no such failure.

    gRPC reports a failed handshake as UNAVAILABLE, like a node that is down; only the text
    tells them apart, and a node that answers but cannot prove the secret must be rejected,
    not retried as if it were away.
    """
    lowered = details.lower()
    if "handshake failed" not in lowered:
        return None
    if "wrong_version_number" in lowered or "http_request" in lowered:
        return PLAINTEXT_REASON
    return WRONG_SECRET_REASON


@dataclass(frozen=True, kw_only=True)
class NodeDescription:
    """What Describe tells about a node."""

    node_id: str
    name: str
    agent_version: str
    protocol_version: str
    engines: tuple[str, ...]
    accelerator_kind: str
    accelerator_name: str
    memory_total_bytes: int
    memory_available_bytes: int
    cost: CostProfile
    models: tuple[ModelInfo, ...]
    disk_models: tuple[DiskModel, ...] = ()
    capabilities: frozenset[str] = frozenset()  # node_agent.types AGENT_CAPABILITIES; old: none


@dataclass(frozen=True, kw_only=True)
class NodeStatusSample:
    """One WatchStatus message."""

    node_id: str
    unix_ms: int
    models: tuple[ModelStatus, ...]
    memory_used_bytes: int
    memory_available_bytes: int
    power_watts: float | None
    busy_seconds: float


class NodeClient:
    """An async client for one agent at one address; cheap to create, holds one channel."""

    def __init__(
        self,
        address: str,
        *,
        secret: ClusterSecret | None = None,
        channel: grpc.aio.Channel | None = None,
    ) -> None:
        self.address = address
        self._secret = secret
        self._channel = channel or open_channel(address, secret)
        self._stub = pb_grpc.AgentStub(self._channel)  # type: ignore[no-untyped-call]

    def _signed(self, method: str) -> tuple[tuple[str, str], ...] | None:
        """The call's signature metadata (None on a plaintext channel)."""
        if self._secret is None:
            return None
        header = self._secret.sign_call(_METHOD + method, now=time.time(), nonce=os.urandom(16))
        return ((SIGNATURE_HEADER, header),)

    async def close(self, grace_s: float | None = None) -> None:
        """Close the channel: calls on it end now, or may finish within `grace_s`."""
        await self._channel.close(grace_s)

    async def describe(self, timeout: float = 5.0) -> NodeDescription:
        """Ask the node who it is."""
        try:
            info = await self._stub.Describe(
                pb.DescribeRequest(), timeout=timeout, metadata=self._signed("Describe")
            )
        except grpc.aio.AioRpcError as exc:
            raise translate(exc, self.address) from None
        return _description(info)

    async def watch_status(self, interval_ms: int = 0) -> AsyncGenerator[NodeStatusSample, None]:
        """The node's status stream, until it breaks (NodeUnavailable) or the caller stops."""
        call = self._stub.WatchStatus(
            pb.WatchStatusRequest(interval_ms=interval_ms), metadata=self._signed("WatchStatus")
        )
        try:
            async for status in call:
                yield _status(status)
        except grpc.aio.AioRpcError as exc:
            raise translate(exc, self.address) from None
        finally:
            call.cancel()
        raise NodeUnavailable(f"{self.address}: status stream ended")

    async def generate(self, request: GenerateRequest) -> AsyncIterator[GenerateEvent]:
        """Stream a generation; closing this iterator cancels it on the node."""
        call = self._stub.Generate(
            wire.generate_request_pb(request), timeout=None, metadata=self._signed("Generate")
        )
        try:
            async for response in call:
                if (event := wire.generate_event(response)) is not None:
                    yield event
        except grpc.aio.AioRpcError as exc:
            raise translate(exc, self.address) from None
        finally:
            call.cancel()

    async def count_tokens(self, request: GenerateRequest, timeout: float = 30.0) -> int:
        """The prompt's length in tokens on this node (its tokenizer and chat template)."""
        try:
            reply = await self._stub.CountTokens(
                wire.generate_request_pb(request),
                timeout=timeout,
                metadata=self._signed("CountTokens"),
            )
        except grpc.aio.AioRpcError as exc:
            raise translate(exc, self.address) from None
        return int(reply.prompt_tokens)

    async def embed(self, model: str, inputs: list[str], timeout: float = 120.0) -> Embeddings:
        """One embedding per input from the node's `model`, in order."""
        try:
            reply = await self._stub.Embed(
                pb.EmbedRequest(model=model, inputs=inputs),
                timeout=timeout,
                metadata=self._signed("Embed"),
            )
        except grpc.aio.AioRpcError as exc:
            raise translate(exc, self.address) from None
        return wire.embeddings(reply)

    async def load_model(
        self,
        model: str,
        *,
        name: str = "",
        engine: str = "",
        context_length: int = 0,
        options: dict[str, str] | None = None,
    ) -> AsyncIterator[LoadProgress]:
        """Load a model on the node, yielding its progress events."""
        request = pb.LoadModelRequest(
            model=model,
            name=name,
            engine=engine,
            context_length=context_length,
            options=options or {},
        )
        call = self._stub.LoadModel(request, metadata=self._signed("LoadModel"))
        try:
            async for progress in call:
                yield wire.load_progress(progress)
        except grpc.aio.AioRpcError as exc:
            raise translate(exc, self.address) from None
        finally:
            call.cancel()

    async def unload_model(self, model: str, timeout: float = 30.0) -> bool:
        """Unload a model; False when it was not loaded."""
        try:
            request = pb.UnloadModelRequest(model=model)
            reply = await self._stub.UnloadModel(
                request, timeout=timeout, metadata=self._signed("UnloadModel")
            )
        except grpc.aio.AioRpcError as exc:
            raise translate(exc, self.address) from None
        return bool(reply.unloaded)

    async def list_models(self, timeout: float = 5.0) -> list[ModelInfo]:
        """The models loaded on the node."""
        try:
            reply = await self._stub.ListModels(
                pb.ListModelsRequest(), timeout=timeout, metadata=self._signed("ListModels")
            )
        except grpc.aio.AioRpcError as exc:
            raise translate(exc, self.address) from None
        return [wire.model_info(m) for m in reply.models]


def open_channel(address: str, secret: ClusterSecret | None) -> grpc.aio.Channel:
    """A TLS channel that trusts only the cluster certificate, or plaintext without a secret."""
    if secret is None:
        return grpc.aio.insecure_channel(address, options=CHANNEL_OPTIONS)
    credentials = grpc.ssl_channel_credentials(
        root_certificates=secret.certificate_pem,
        private_key=secret.private_key_pem,
        certificate_chain=secret.certificate_pem,
    )
    options = (*CHANNEL_OPTIONS, ("grpc.ssl_target_name_override", TLS_NAME))
    return grpc.aio.secure_channel(address, credentials, options=options)


def _description(info: pb.NodeInfo) -> NodeDescription:
    return NodeDescription(
        node_id=info.node_id,
        name=info.hostname,
        agent_version=info.agent_version,
        protocol_version=info.protocol_version,
        engines=tuple(info.engines),
        accelerator_kind=info.accelerator.kind,
        accelerator_name=info.accelerator.name,
        memory_total_bytes=info.memory_total_bytes,
        memory_available_bytes=info.memory_available_bytes,
        cost=wire.cost(info.cost),
        models=tuple(wire.model_info(m) for m in info.models),
        disk_models=tuple(wire.disk_model(d) for d in info.disk_models),
        capabilities=frozenset(info.capabilities),
    )


def _status(s: pb.NodeStatus) -> NodeStatusSample:
    models = tuple(wire.model_status(m) for m in s.models)
    return NodeStatusSample(
        node_id=s.node_id,
        unix_ms=s.unix_ms,
        models=models,
        memory_used_bytes=s.memory_used_bytes,
        memory_available_bytes=s.memory_available_bytes,
        power_watts=s.power_watts if s.power_measured else None,
        busy_seconds=s.busy_seconds,
    )


ClientFactory = Callable[[str], NodeClient]
