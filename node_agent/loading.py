"""Loading a model: resolve the reference (downloading if need be), then hand it to the engine.

A load is a stream of domain `LoadProgress` events, RESOLVING, any DOWNLOADING, LOADING, then
READY with the loaded model, or an error raised part way. The servicer relays them to a
LoadModel caller and logs them for the models given at start; it also owns the protobuf and
the status codes, so nothing here knows about gRPC. `models.resolve` blocks on the disk and
the network, so it runs off the event loop and its download progress is relayed as it comes.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

from node_agent import errors, heap, models
from node_agent.engines.base import Engine, LoadSpec
from node_agent.types import LoadProgress, LoadStage

KNOWN_ENGINES = ("mlx", "vllm")


def check_engine(name: str, running: str) -> None:
    """Refuse an engine this node does not run, before any progress is streamed."""
    if name in ("", running):
        return
    if name not in KNOWN_ENGINES:
        raise errors.InvalidRequest(
            f"unknown engine {name!r}; engines are {', '.join(KNOWN_ENGINES)}"
        )
    raise errors.EngineUnavailable(
        f"engine {name!r} is not running on this node (it runs {running})"
    )


async def load_events(
    engine: Engine,
    resolve: Callable[..., Any],
    data_dir: Path,
    ref: str,
    *,
    name: str,
    context_length: int,
    options: dict[str, str],
) -> AsyncIterator[LoadProgress]:
    """Resolve `ref` and load it on `engine`, yielding each stage as it is reached."""
    yield LoadProgress(stage=LoadStage.RESOLVING, message=f"resolving {ref}")
    resolving = _Resolving(resolve, ref, data_dir)
    async for event in resolving.progress():
        yield event
    resolved = resolving.result()
    yield LoadProgress(stage=LoadStage.LOADING, message=f"loading {resolved.path} on {engine.name}")
    spec = LoadSpec(
        name=name or resolved.name,
        source=resolved.source,
        path=resolved.path,
        context_length=context_length,
        options=options,
    )
    info = await engine.load(spec)
    heap.settle()  # the model's objects join the frozen heap (node_agent/heap.py)
    yield LoadProgress(stage=LoadStage.READY, message=f"{info.name} is ready", model=info)


class _Resolving:
    """models.resolve run off the event loop, its download progress relayed as it comes."""

    def __init__(self, resolve: Callable[..., Any], ref: str, data_dir: Path) -> None:
        loop = asyncio.get_running_loop()
        self._queue: asyncio.Queue[LoadProgress] = asyncio.Queue()

        def progress(event: LoadProgress) -> None:  # called on resolve's thread
            loop.call_soon_threadsafe(self._queue.put_nowait, event)

        self._task: asyncio.Task[models.ResolvedModel] = asyncio.create_task(
            _call(resolve, ref, data_dir, progress)
        )

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
