"""The controller's and gateway's client for one node agent: the only place that sees gRPC errors.

Errors raised here (translated once, from grpc.aio.AioRpcError):

    NodeError                   base
    ├── NodeUnavailable         cannot reach the node, or it went away mid-call (failover-able)
    ├── NodeTimeout             the node did not answer in time (failover-able)
    ├── NodeModelMissing        the node does not have the model loaded (failover-able)
    ├── NodeRejected            the node refused the request as invalid (the client's fault)
    └── NodeFailed              anything else the node reported
"""

from __future__ import annotations

import logging
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from dataclasses import dataclass

import grpc
import grpc.aio

from cluster.types import CostProfile
from node_agent import wire
from node_agent.proto import pb, pb_grpc
from node_agent.types import (
    DiskModel,
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


class NodeFailed(NodeError):
    """The node reported an error that fits none of the above."""


_CODE_TO_ERROR: dict[grpc.StatusCode, type[NodeError]] = {
    grpc.StatusCode.UNAVAILABLE: NodeUnavailable,
    grpc.StatusCode.CANCELLED: NodeUnavailable,
    grpc.StatusCode.DEADLINE_EXCEEDED: NodeTimeout,
    grpc.StatusCode.FAILED_PRECONDITION: NodeModelMissing,
    grpc.StatusCode.NOT_FOUND: NodeModelMissing,
    grpc.StatusCode.INVALID_ARGUMENT: NodeRejected,
    grpc.StatusCode.OUT_OF_RANGE: NodeRejected,
}


def translate(exc: grpc.aio.AioRpcError, address: str) -> NodeError:
    """The domain error for a gRPC failure on the node at `address`."""
    kind = _CODE_TO_ERROR.get(exc.code(), NodeFailed)
    return kind(f"{address}: {exc.details() or exc.code().name}")


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

    def __init__(self, address: str, *, channel: grpc.aio.Channel | None = None) -> None:
        self.address = address
        self._channel = channel or grpc.aio.insecure_channel(address, options=CHANNEL_OPTIONS)
        self._stub = pb_grpc.AgentStub(self._channel)

    async def close(self, grace_s: float | None = None) -> None:
        """Close the channel: calls on it end now, or may finish within `grace_s`."""
        await self._channel.close(grace_s)

    async def describe(self, timeout: float = 5.0) -> NodeDescription:
        """Ask the node who it is."""
        try:
            info = await self._stub.Describe(pb.DescribeRequest(), timeout=timeout)
        except grpc.aio.AioRpcError as exc:
            raise translate(exc, self.address) from None
        return _description(info)

    async def watch_status(self, interval_ms: int = 0) -> AsyncGenerator[NodeStatusSample, None]:
        """The node's status stream, until it breaks (NodeUnavailable) or the caller stops."""
        call = self._stub.WatchStatus(pb.WatchStatusRequest(interval_ms=interval_ms))
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
        call = self._stub.Generate(wire.generate_request_pb(request), timeout=None)
        try:
            async for response in call:
                if (event := wire.generate_event(response)) is not None:
                    yield event
        except grpc.aio.AioRpcError as exc:
            raise translate(exc, self.address) from None
        finally:
            call.cancel()

    async def load_model(
        self, model: str, *, name: str = "", engine: str = "", context_length: int = 0,
        options: dict[str, str] | None = None,
    ) -> AsyncIterator[LoadProgress]:
        """Load a model on the node, yielding its progress events."""
        request = pb.LoadModelRequest(model=model, name=name, engine=engine,
                                      context_length=context_length, options=options or {})
        call = self._stub.LoadModel(request)
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
            reply = await self._stub.UnloadModel(request, timeout=timeout)
        except grpc.aio.AioRpcError as exc:
            raise translate(exc, self.address) from None
        return bool(reply.unloaded)

    async def list_models(self, timeout: float = 5.0) -> list[ModelInfo]:
        """The models loaded on the node."""
        try:
            reply = await self._stub.ListModels(pb.ListModelsRequest(), timeout=timeout)
        except grpc.aio.AioRpcError as exc:
            raise translate(exc, self.address) from None
        return [wire.model_info(m) for m in reply.models]


def _description(info: pb.NodeInfo) -> NodeDescription:
    return NodeDescription(
        node_id=info.node_id, name=info.hostname, agent_version=info.agent_version,
        protocol_version=info.protocol_version, engines=tuple(info.engines),
        accelerator_kind=info.accelerator.kind, accelerator_name=info.accelerator.name,
        memory_total_bytes=info.memory_total_bytes,
        memory_available_bytes=info.memory_available_bytes,
        cost=wire.cost(info.cost),
        models=tuple(wire.model_info(m) for m in info.models),
        disk_models=tuple(wire.disk_model(d) for d in info.disk_models),
    )


def _status(s: pb.NodeStatus) -> NodeStatusSample:
    models = tuple(wire.model_status(m) for m in s.models)
    return NodeStatusSample(
        node_id=s.node_id, unix_ms=s.unix_ms, models=models,
        memory_used_bytes=s.memory_used_bytes, memory_available_bytes=s.memory_available_bytes,
        power_watts=s.power_watts if s.power_measured else None, busy_seconds=s.busy_seconds,
    )


ClientFactory = Callable[[str], NodeClient]
