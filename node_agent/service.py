"""The agent's gRPC servicer: protobuf in and out, domain records inside, errors mapped once.

Error mapping (`_status_of`, the only place that picks status codes):

    UnknownModel                  NOT_FOUND
    ModelNotLoaded                FAILED_PRECONDITION
    PromptTooLong                 OUT_OF_RANGE
    InvalidRequest                INVALID_ARGUMENT
    OutOfMemory                   RESOURCE_EXHAUSTED
    EngineUnavailable             UNAVAILABLE
    LoadFailed                    INTERNAL, with the engine's message
    anything else                 INTERNAL "internal error: ...", logged with its traceback

LoadModel reports a failure as a FAILED event carrying the reason, the stream's last message, so
an admin watching the stream reads why; the call then ends with the mapped status code, so a
program can tell "does not fit" from "no such model" without parsing text.

The servicer only gathers and relays: what the node says about itself is built in `node_facts`,
and the stages of a load come from `loading`.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import logging
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, TypeVar

import grpc
import grpc.aio

from node_agent import errors, heap, loading, models
from node_agent.engines.base import Engine
from node_agent.node_facts import BusyMeter, NodeFacts, Probe, node_info, node_status, on_disk
from node_agent.proto import pb, pb_grpc
from node_agent.types import Embeddings, LoadProgress, LoadStage, ModelInfo, ModelStatus
from node_agent.wire import (
    embeddings_pb,
    generate_request,
    generate_response,
    load_progress_pb,
    model_info_pb,
)

logger = logging.getLogger(__name__)

MIN_STATUS_INTERVAL_MS = 50  # a client asking for 1 ms would otherwise spin the event loop
MAX_MESSAGE_BYTES = 64 * 1024 * 1024
SERVER_OPTIONS = (
    ("grpc.so_reuseport", 0),  # a second agent on a taken port must fail, not share it
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    # Clients ping every ~10 s to notice dead nodes; accept that rather than send GOAWAY.
    ("grpc.keepalive_time_ms", 20_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.min_recv_ping_interval_without_data_ms", 5_000),
    ("grpc.http2.max_ping_strikes", 0),
    ("grpc.max_concurrent_streams", 1_000),
)

_CODES: tuple[tuple[type[errors.AgentError], grpc.StatusCode], ...] = (
    (errors.UnknownModel, grpc.StatusCode.NOT_FOUND),
    (errors.ModelNotLoaded, grpc.StatusCode.FAILED_PRECONDITION),
    (errors.PromptTooLong, grpc.StatusCode.OUT_OF_RANGE),  # before its base class
    (errors.InvalidRequest, grpc.StatusCode.INVALID_ARGUMENT),
    (errors.OutOfMemory, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (errors.EngineUnavailable, grpc.StatusCode.UNAVAILABLE),
    (errors.LoadFailed, grpc.StatusCode.INTERNAL),
)


def _status_of(exc: BaseException) -> tuple[grpc.StatusCode, str]:
    """The gRPC status for an error; unexpected errors are logged with their traceback."""
    for kind, code in _CODES:
        if isinstance(exc, kind):
            return code, str(exc) or kind.__name__
    logger.error("internal error", exc_info=exc)
    return grpc.StatusCode.INTERNAL, f"internal error: {type(exc).__name__}: {exc}"


_Handler = TypeVar("_Handler", bound=Callable[..., Any])


def _unary(handler: _Handler) -> _Handler:
    """Turn a unary handler's exceptions into gRPC statuses."""

    @functools.wraps(handler)
    async def wrapped(self: Any, request: Any, context: grpc.aio.ServicerContext) -> Any:
        try:
            return await handler(self, request, context)
        except grpc.aio.AbortError:
            raise
        except Exception as exc:
            await context.abort(*_status_of(exc))

    return wrapped  # type: ignore[return-value]


def _streaming(handler: _Handler) -> _Handler:
    """Turn a streaming handler's exceptions into gRPC statuses; close it when the call ends."""

    @functools.wraps(handler)
    async def wrapped(self: Any, request: Any, context: grpc.aio.ServicerContext) -> Any:
        try:
            async with contextlib.aclosing(handler(self, request, context)) as stream:
                async for message in stream:
                    yield message
        except grpc.aio.AbortError:
            raise
        except Exception as exc:
            await context.abort(*_status_of(exc))

    return wrapped  # type: ignore[return-value]


class AgentService(pb_grpc.AgentServicer):
    """The Agent service over one engine."""

    def __init__(
        self,
        *,
        facts: NodeFacts,
        engine: Engine,
        data_dir: Path,
        probe: Callable[[], Probe],
        status_interval_ms: int = 500,
        resolve: Callable[..., Any] = models.resolve,
    ) -> None:
        self._facts = facts
        self._engine = engine
        self._data_dir = data_dir
        self._probe = probe
        self._interval_ms = status_interval_ms
        self._resolve = resolve
        self._busy = BusyMeter()
        self._started = time.monotonic()
        self._stopping = asyncio.Event()

    def shutdown(self) -> None:
        """End every status stream now; the server's grace period is for generations."""
        self._stopping.set()

    @_unary
    async def Describe(self, request: pb.DescribeRequest, context: Any) -> pb.NodeInfo:
        """Who this node is, with its memory now and its loaded models."""
        probe = await asyncio.to_thread(self._probe)
        loaded = self._engine.models()
        disk = await asyncio.to_thread(on_disk, self._data_dir, loaded)
        return node_info(self._facts, probe.memory, loaded, disk)

    @_streaming
    async def WatchStatus(
        self, request: pb.WatchStatusRequest, context: Any
    ) -> AsyncIterator[pb.NodeStatus]:
        """One NodeStatus per interval until the client goes away (which cancels this)."""
        interval_ms = max(request.interval_ms or self._interval_ms, MIN_STATUS_INTERVAL_MS)
        while not self._stopping.is_set():
            yield await self.status()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), interval_ms / 1000)

    async def status(self) -> pb.NodeStatus:
        """The node's live status now."""
        probe = await asyncio.to_thread(self._probe)
        infos = {m.name: m for m in self._engine.models()}
        statuses = [_with_info(s, infos.get(s.model)) for s in self._engine.status()]
        return node_status(
            self._facts.node_id,
            statuses,
            probe,
            uptime=time.monotonic() - self._started,
            busy=self._busy.seconds(),
        )

    @_streaming
    async def LoadModel(
        self, request: pb.LoadModelRequest, context: Any
    ) -> AsyncIterator[pb.LoadProgress]:
        """RESOLVING, DOWNLOADING..., LOADING, READY; or FAILED with the reason, then the status."""
        loading.check_engine(request.engine, self._engine.name)
        try:
            async for event in self._load(request):
                yield load_progress_pb(event)
        except Exception as exc:
            code, message = _status_of(exc)
            logger.warning("loading %s failed: %s", request.model, message)
            yield pb.LoadProgress(stage=pb.LoadProgress.FAILED, message=message)
            context.set_code(code)
            context.set_details(message)

    async def load(self, ref: str) -> ModelInfo:
        """Resolve and load a model, logging its progress; for the models given at start."""
        logged_tenths = -1
        async for event in self._load(pb.LoadModelRequest(model=ref)):
            tenths = event.bytes_done * 10 // max(event.bytes_total, 1)
            if event.stage != LoadStage.DOWNLOADING:
                logger.info("model %s: %s", ref, event.message)
            elif tenths > logged_tenths:  # a download reports twice a second; log every 10%
                logged_tenths = tenths
                logger.info(
                    "model %s: %s, %d of %d MB",
                    ref,
                    event.message,
                    event.bytes_done >> 20,
                    event.bytes_total >> 20,
                )
            if event.model is not None:
                return event.model
        raise AssertionError("a load ends with READY or raises")

    def _load(self, request: pb.LoadModelRequest) -> AsyncIterator[LoadProgress]:
        """The load a request asks for, as the events `loading.load_events` yields."""
        return loading.load_events(
            self._engine,
            self._resolve,
            self._data_dir,
            request.model,
            name=request.name,
            context_length=request.context_length,
            options=dict(request.options),
        )

    @_unary
    async def UnloadModel(
        self, request: pb.UnloadModelRequest, context: Any
    ) -> pb.UnloadModelResponse:
        """Unload a model; `unloaded` is false when it was not loaded."""
        heap.thaw()  # so that the engine's collection can free the model's cycles
        try:
            await self._engine.unload(request.model)
        except errors.ModelNotLoaded:
            return pb.UnloadModelResponse(unloaded=False)
        finally:
            heap.settle()
        logger.info("unloaded %s", request.model)
        return pb.UnloadModelResponse(unloaded=True)

    @_unary
    async def ListModels(
        self, request: pb.ListModelsRequest, context: Any
    ) -> pb.ListModelsResponse:
        """The models loaded now."""
        return pb.ListModelsResponse(models=[model_info_pb(m) for m in self._engine.models()])

    @_streaming
    async def Generate(
        self, request: pb.GenerateRequest, context: Any
    ) -> AsyncIterator[pb.GenerateResponse]:
        """Deltas then Finished; the client closing the stream cancels the engine's generation."""
        domain = generate_request(request)
        self._busy.enter()
        try:
            events = self._engine.generate(domain)
            try:
                async for event in events:
                    yield generate_response(event)
            finally:  # close the engine's generator now, so it frees the slot at once
                await events.aclose()  # type: ignore[attr-defined]
        finally:
            self._busy.leave()

    @_unary
    async def CountTokens(
        self, request: pb.GenerateRequest, context: Any
    ) -> pb.CountTokensResponse:
        """The prompt's length in tokens, as Generate would render it; nothing is generated."""
        tokens = await self._engine.count_tokens(generate_request(request))
        return pb.CountTokensResponse(prompt_tokens=tokens)

    @_unary
    async def Embed(self, request: pb.EmbedRequest, context: Any) -> pb.EmbedResponse:
        """One unit-length embedding per input, from a model that makes them."""
        self._busy.enter()
        try:
            vectors, tokens = await self._engine.embed(request.model, list(request.inputs))
        finally:
            self._busy.leave()
        return embeddings_pb(Embeddings(vectors=vectors, prompt_tokens=tokens))


def _with_info(status: ModelStatus, info: ModelInfo | None) -> ModelStatus:
    """A model's status with what its ModelInfo says of it (a model loaded after Describe)."""
    if info is None:
        return status
    return dataclasses.replace(
        status,
        capabilities=info.capabilities,
        context_length=info.context_length,
        engine=info.engine,
    )
