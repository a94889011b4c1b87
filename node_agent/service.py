"""The agent's gRPC servicer: protobuf in and out, domain records inside, errors mapped once.

Error mapping (`_status_of`, the only place that picks status codes):

    UnknownModel                  NOT_FOUND
    ModelNotLoaded                FAILED_PRECONDITION
    InvalidRequest, PromptTooLong INVALID_ARGUMENT
    OutOfMemory                   RESOURCE_EXHAUSTED
    EngineUnavailable             UNAVAILABLE
    LoadFailed                    INTERNAL, with the engine's message
    anything else                 INTERNAL "internal error: ...", logged with its traceback

LoadModel reports a failure as a FAILED event carrying the reason, the stream's last message, so
an admin watching the stream reads why; the call then ends with the mapped status code, so a
program can tell "does not fit" from "no such model" without parsing text.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import inspect
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import grpc
import grpc.aio

from node_agent import errors, heap, models
from node_agent.engines.base import Engine, LoadSpec
from node_agent.hardware import Memory
from node_agent.proto import pb, pb_grpc
from node_agent.types import (
    CostProfile,
    DiskModel,
    Hardware,
    LoadProgress,
    LoadStage,
    ModelInfo,
    ModelStatus,
)
from node_agent.wire import (
    cost_pb,
    disk_model_pb,
    generate_request,
    generate_response,
    load_progress_pb,
    model_info_pb,
    model_status_pb,
)

logger = logging.getLogger(__name__)

KNOWN_ENGINES = ("mlx", "vllm")
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
    (errors.InvalidRequest, grpc.StatusCode.INVALID_ARGUMENT),
    (errors.OutOfMemory, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (errors.EngineUnavailable, grpc.StatusCode.UNAVAILABLE),
    (errors.LoadFailed, grpc.StatusCode.INTERNAL),
)


@dataclass(frozen=True, kw_only=True)
class NodeFacts:
    """What Describe reports that does not change while the agent runs."""

    node_id: str
    name: str
    agent_version: str
    protocol_version: str
    engines: tuple[str, ...]
    hardware: Hardware
    cost: CostProfile


@dataclass(frozen=True)
class Probe:
    """A reading of the machine's memory and power."""

    memory: Memory
    power_watts: float | None


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


class BusyMeter:
    """Node-wide seconds during which at least one generation was running."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._running = 0
        self._since = 0.0
        self._total = 0.0

    def enter(self) -> None:
        """A generation started."""
        if self._running == 0:
            self._since = self._clock()
        self._running += 1

    def leave(self) -> None:
        """A generation ended, however it ended."""
        self._running -= 1
        if self._running == 0:
            self._total += self._clock() - self._since

    def seconds(self) -> float:
        """Busy seconds so far, counting the current stretch."""
        ongoing = self._clock() - self._since if self._running else 0.0
        return self._total + ongoing


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
        on_disk = await asyncio.to_thread(_on_disk, self._data_dir, loaded)
        return node_info(self._facts, probe.memory, loaded, on_disk)

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
        return node_status(
            self._facts.node_id, self._engine.status(), probe,
            uptime=time.monotonic() - self._started, busy=self._busy.seconds(),
        )

    @_streaming
    async def LoadModel(
        self, request: pb.LoadModelRequest, context: Any
    ) -> AsyncIterator[pb.LoadProgress]:
        """RESOLVING, DOWNLOADING..., LOADING, READY; or FAILED with the reason, then the status."""
        self._check_engine(request.engine)
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
                logger.info("model %s: %s, %d of %d MB", ref, event.message,
                            event.bytes_done >> 20, event.bytes_total >> 20)
            if event.model is not None:
                return event.model
        raise AssertionError("a load ends with READY or raises")

    async def _load(self, request: pb.LoadModelRequest) -> AsyncIterator[LoadProgress]:
        yield LoadProgress(stage=LoadStage.RESOLVING, message=f"resolving {request.model}")
        resolving = _Resolving(self._resolve, request.model, self._data_dir)
        async for event in resolving.progress():
            yield event
        resolved = resolving.result()
        yield LoadProgress(stage=LoadStage.LOADING,
                           message=f"loading {resolved.path} on {self._engine.name}")
        spec = LoadSpec(
            name=request.name or resolved.name, source=resolved.source, path=resolved.path,
            context_length=request.context_length, options=dict(request.options),
        )
        info = await self._engine.load(spec)
        heap.settle()  # the model's objects join the frozen heap (node_agent/heap.py)
        yield LoadProgress(stage=LoadStage.READY, message=f"{info.name} is ready", model=info)

    def _check_engine(self, name: str) -> None:
        """Refuse an engine this node does not run, before any progress is streamed."""
        if name in ("", self._engine.name):
            return
        if name not in KNOWN_ENGINES:
            raise errors.InvalidRequest(
                f"unknown engine {name!r}; engines are {', '.join(KNOWN_ENGINES)}")
        raise errors.EngineUnavailable(
            f"engine {name!r} is not running on this node (it runs {self._engine.name})")

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


class _Resolving:
    """models.resolve run off the event loop, its download progress relayed as it comes."""

    def __init__(self, resolve: Callable[..., Any], ref: str, data_dir: Path) -> None:
        loop = asyncio.get_running_loop()
        self._queue: asyncio.Queue[LoadProgress] = asyncio.Queue()

        def progress(event: LoadProgress) -> None:  # called on resolve's thread
            loop.call_soon_threadsafe(self._queue.put_nowait, event)

        self._task: asyncio.Task[models.ResolvedModel] = asyncio.create_task(
            _call(resolve, ref, data_dir, progress))

    async def progress(self) -> AsyncIterator[LoadProgress]:
        """Progress events as resolve reports them, until it returns or raises."""
        try:
            while not self._task.done():
                getter = asyncio.ensure_future(self._queue.get())
                await asyncio.wait({getter, self._task}, return_when=asyncio.FIRST_COMPLETED)
                if getter.done():
                    yield getter.result()
                else:
                    getter.cancel()
            while not self._queue.empty():
                yield self._queue.get_nowait()
        finally:
            if not self._task.done():  # the caller went away mid-download
                self._task.cancel()

    def result(self) -> models.ResolvedModel:
        """The resolved model; raises what resolve raised."""
        return self._task.result()


async def _call(resolve: Callable[..., Any], *args: Any) -> models.ResolvedModel:
    """Await resolve if it is async; run it in a thread if it blocks."""
    if inspect.iscoroutinefunction(resolve):
        resolved = await resolve(*args)
    else:
        resolved = await asyncio.to_thread(resolve, *args)
    assert isinstance(resolved, models.ResolvedModel)
    return resolved


# --- proto <-> domain ---------------------------------------------------------------------------


def _on_disk(data_dir: Path, loaded: list[ModelInfo]) -> list[DiskModel]:
    """The models on this node's disk, loaded local directories included."""
    paths = {m.source: Path(m.source) for m in loaded if m.source.startswith(("/", "~", "."))}
    return models.models_on_disk(data_dir, {s: p.expanduser() for s, p in paths.items()
                                            if p.expanduser().is_dir()})


def node_info(facts: NodeFacts, memory: Memory, loaded: list[ModelInfo],
              on_disk: list[DiskModel] | None = None) -> pb.NodeInfo:
    """Describe's answer."""
    hw, c = facts.hardware, facts.cost
    return pb.NodeInfo(
        node_id=facts.node_id, hostname=facts.name, agent_version=facts.agent_version,
        protocol_version=facts.protocol_version, engines=list(facts.engines),
        accelerator=pb.Accelerator(kind=hw.accelerator_kind, name=hw.accelerator_name,
                                   memory_bytes=hw.accelerator_memory_bytes,
                                   count=hw.accelerator_count),
        memory_total_bytes=memory.total, memory_available_bytes=memory.available,
        cost=cost_pb(c),
        models=[model_info_pb(m) for m in loaded], os=hw.os, arch=hw.arch,
        disk_models=[disk_model_pb(d) for d in on_disk or ()],
    )


def node_status(
    node_id: str, statuses: list[ModelStatus], probe: Probe, *, uptime: float, busy: float
) -> pb.NodeStatus:
    """One WatchStatus message."""
    mem = probe.memory
    return pb.NodeStatus(
        node_id=node_id, unix_ms=int(time.time() * 1000),
        models=[model_status_pb(s) for s in statuses],
        memory_used_bytes=max(mem.total - mem.available, 0), memory_available_bytes=mem.available,
        power_watts=probe.power_watts or 0.0, power_measured=probe.power_watts is not None,
        uptime_seconds=uptime, busy_seconds=busy,
    )
