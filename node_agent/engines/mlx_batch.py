"""The MLX engine's worker thread: the only code that touches MLX and the models.

The asyncio side enqueues commands; the worker answers loads and unloads through futures and
streams each request's events to its Sink. With no request running it blocks on the command
queue; otherwise it takes whatever commands are waiting between decode steps, so new requests
join the running batches without waiting for them to drain. Embeddings run there too, a prefill
chunk's worth of tokens per turn (mlx_embed), so they never race the batches for the model.
"""

from __future__ import annotations

import gc
import logging
import queue
import random
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future, InvalidStateError
from dataclasses import dataclass
from typing import Any

import mlx.core as mx
import mlx_lm

from node_agent.engines.base import LoadSpec
from node_agent.engines.mlx_embed import Embedding, body_of
from node_agent.engines.mlx_grammar import GrammarProcessor, Grammars, logits_width
from node_agent.engines.mlx_slot import BatchLimits, ModelSlot, weights_bytes
from node_agent.engines.mlx_stream import Sink
from node_agent.engines.parsing import Dialect, capabilities, dialect_of
from node_agent.errors import AgentError, LoadFailed, ModelNotLoaded, OutOfMemory
from node_agent.models import model_weights_bytes, read_context_length
from node_agent.types import (
    CONSTRAINTS,
    EMBEDDINGS,
    LOGPROBS,
    GenerateRequest,
    ModelInfo,
    ModelStatus,
)

logger = logging.getLogger(__name__)

WEIGHTS_OVERHEAD = 1.2  # activations, KV caches and allocator slack on top of the weights


@dataclass(frozen=True)
class Submit:
    """Start a generation; `ticket` names it for a later Cancel."""

    ticket: int
    request: GenerateRequest
    sink: Sink
    submitted_at: float
    processor: GrammarProcessor | None = None  # compiled by the caller, off this thread
    # The prompt rendered by the caller off this thread, with the tokenizer it used; None (or
    # another model's tokenizer, if the model was replaced meanwhile): rendered here.
    rendered: tuple[Any, list[int]] | None = None


@dataclass(frozen=True)
class Cancel:
    """Drop a generation from its batch."""

    ticket: int


@dataclass(frozen=True)
class Load:
    """Load a model; its ModelInfo or the error lands in `reply`."""

    spec: LoadSpec
    reply: Future[ModelInfo]


@dataclass(frozen=True)
class Unload:
    """Unload a model, cancelling its requests."""

    name: str
    reply: Future[None]


@dataclass(frozen=True)
class Embed:
    """Embed token-id inputs with a model's body; the vectors, in order, land in `reply`."""

    model: str
    inputs: Sequence[Sequence[int]]
    reply: Future[list[list[float]]]


@dataclass(frozen=True)
class Shutdown:
    """Unload everything and end the worker thread."""

    reply: Future[None]


Command = Submit | Cancel | Load | Unload | Embed | Shutdown


class Worker:
    """Owns the models on one thread; other threads talk to it only through `send`."""

    def __init__(self, *, limits: BatchLimits, available_memory: Callable[[], int]) -> None:
        self._limits, self._available_memory = limits, available_memory
        self._commands: queue.SimpleQueue[Command] = queue.SimpleQueue()
        self._slots: dict[str, ModelSlot] = {}
        # Embeddings in order of arrival, each with the slot whose model it runs on.
        self._embeddings: deque[tuple[Embed, ModelSlot, Embedding]] = deque()
        self._seeds = random.Random()
        self._thread = threading.Thread(target=self._run, name="mlx-engine", daemon=True)

    def start(self) -> None:
        """Start the worker thread."""
        self._thread.start()

    def send(self, command: Command) -> None:
        """Enqueue a command; never blocks."""
        self._commands.put(command)

    def join(self) -> None:
        """Wait for the thread to end (after a Shutdown)."""
        self._thread.join()

    def info(self, name: str) -> ModelInfo | None:
        """The loaded model called `name`, if any; safe to call from any thread."""
        slot = self._slots.get(name)
        return slot.info if slot is not None else None

    def grammars(self, name: str) -> Grammars | None:
        """The grammar compiler of the model called `name`, if it has one; any thread."""
        slot = self._slots.get(name)
        return slot.grammars if slot is not None else None

    def tokenizer(self, name: str) -> Any:
        """The tokenizer of the model called `name`, None if not loaded; any thread."""
        slot = self._slots.get(name)
        return slot.tokenizer if slot is not None else None

    def infos(self) -> list[ModelInfo]:
        """Every loaded model; safe to call from any thread."""
        return [slot.info for slot in list(self._slots.values())]

    def statuses(self) -> list[ModelStatus]:
        """Live counters per loaded model; safe to call from any thread."""
        return [slot.status() for slot in list(self._slots.values())]

    def _run(self) -> None:
        """Turn the loop until Shutdown; nothing raised in one turn ends the thread."""
        while True:
            try:
                if not self._turn():
                    return
            except Exception:
                logger.exception("mlx worker: unexpected error; carrying on")

    def _turn(self) -> bool:
        """Take commands, run a chunk of embeddings, then step every busy model once; block
        when nothing is running."""
        busy = [slot for slot in self._slots.values() if slot.streams]
        for command in self._take(block=not busy and not self._embeddings):
            if isinstance(command, Shutdown):
                self._shutdown(command.reply)
                return False
            self._handle(command)
        if self._embeddings:
            self._embed()
        started = time.perf_counter()
        for slot in busy:
            if slot.streams:  # a command may have just cancelled or unloaded it
                self._step(slot)
        if busy and self._limits.step_interval_s:
            time.sleep(max(0.0, self._limits.step_interval_s - (time.perf_counter() - started)))
        return True

    def _take(self, *, block: bool) -> list[Command]:
        """Every waiting command; with `block`, wait for at least one."""
        commands = [self._commands.get()] if block else []
        while True:
            try:
                commands.append(self._commands.get_nowait())
            except queue.Empty:
                return commands

    def _handle(self, command: Command) -> None:
        """Run one command; its errors go to its caller, never up the thread."""
        try:
            if isinstance(command, Submit):
                self._slot(command.request.model).submit(
                    command.ticket,
                    command.request,
                    command.sink,
                    command.submitted_at,
                    self._seed(command.request.sampling.seed),
                    command.processor,
                    command.rendered,
                )
            elif isinstance(command, Cancel):
                any(slot.cancel(command.ticket) for slot in self._slots.values())
            elif isinstance(command, Load):
                _resolve(command.reply, self._load(command.spec))
            elif isinstance(command, Unload):
                self._unload(command.name)
                _resolve(command.reply, None)
            elif isinstance(command, Embed):
                slot = self._slot(command.model)
                job = Embedding(slot.model, command.inputs, chunk=self._chunk)
                self._embeddings.append((command, slot, job))
        except Exception as exc:
            self._report(command, exc)

    def _report(self, command: Command, exc: Exception) -> None:
        """Send a command's failure to whoever waits for it."""
        if not isinstance(exc, AgentError):
            logger.exception("mlx worker: %s failed", type(command).__name__)
        if isinstance(command, Submit):
            command.sink.put(exc if isinstance(exc, AgentError) else AgentError(str(exc)))
        elif isinstance(command, Load | Unload | Embed):
            _resolve(command.reply, error=exc)

    def _step(self, slot: ModelSlot) -> None:
        """One decode step of one model; a failure ends that model's requests, not the thread."""
        try:
            slot.step()
        except Exception as exc:
            logger.exception("mlx worker: decode step of %s failed", slot.info.name)
            slot.fail(AgentError(f"generation failed: {exc}"))

    @property
    def _chunk(self) -> int:
        """Tokens of embeddings per turn: a prefill chunk, what a joining request costs too."""
        return self._limits.prefill_step

    def _embed(self) -> None:
        """Advance the oldest embedding by a chunk; answer it once its last input has run."""
        command, slot, job = self._embeddings[0]
        if command.reply.cancelled():  # its caller went away
            self._embeddings.popleft()
            return
        try:
            if self._slots.get(command.model) is not slot:  # unloaded since it was sent
                raise ModelNotLoaded(f"model {command.model!r} is not loaded on this node")
            job.step(self._chunk)
        except Exception as exc:
            self._embeddings.popleft()
            self._report(command, exc)
            return
        if job.done:
            self._embeddings.popleft()
            _resolve(command.reply, job.vectors)

    def _slot(self, name: str) -> ModelSlot:
        """The loaded model called `name`."""
        slot = self._slots.get(name)
        if slot is None:
            raise ModelNotLoaded(f"model {name!r} is not loaded on this node")
        return slot

    def _seed(self, seed: int | None) -> int:
        """The request's seed as an unsigned 64-bit key, or a fresh random one."""
        return self._seeds.getrandbits(64) if seed is None else seed % (1 << 64)

    def _load(self, spec: LoadSpec) -> ModelInfo:
        """Check memory, load weights and tokenizer, and start the model's batch."""
        if spec.name in self._slots:
            return self._slots[spec.name].info
        if not spec.path.is_dir():
            raise LoadFailed(f"{spec.path} is not a model directory")
        self._check_memory(spec)
        try:
            model, tokenizer = mlx_lm.load(str(spec.path))[:2]
            context = spec.context_length or read_context_length(spec.path)
        except Exception as exc:  # mlx-lm raises anything from OSError to KeyError on bad files
            raise LoadFailed(f"cannot load {spec.path}: {exc}") from exc
        dialect = dialect_of(tokenizer, tool_parser=spec.options.get("tool_parser", ""))
        grammars = _grammars(model, tokenizer, dialect)
        info = ModelInfo(
            name=spec.name,
            engine="mlx",
            source=spec.source,
            memory_bytes=weights_bytes(model),
            context_length=context,
            capabilities=_capabilities(model, tokenizer, dialect, grammars),
        )
        self._slots[spec.name] = ModelSlot(
            info=info,
            model=model,
            tokenizer=tokenizer,
            limits=self._limits,
            dialect=dialect,
            grammars=grammars,
        )
        logger.info("mlx: loaded %s from %s (%d bytes)", spec.name, spec.path, info.memory_bytes)
        return info

    def _check_memory(self, spec: LoadSpec) -> None:
        """Refuse a model whose weights (plus overhead) exceed the memory available now."""
        try:
            need = int(model_weights_bytes(spec.path) * WEIGHTS_OVERHEAD)
        except Exception as exc:
            raise LoadFailed(f"cannot read the weights in {spec.path}: {exc}") from exc
        have = self._available_memory()
        if need > have:
            raise OutOfMemory(
                f"{spec.name} needs about {need / 2**30:.2f} GiB ({need} bytes); "
                f"{have / 2**30:.2f} GiB ({have} bytes) are available"
            )

    def _unload(self, name: str) -> None:
        """Cancel a model's requests and free it."""
        self._slot(name).close()
        del self._slots[name]
        gc.collect()
        mx.clear_cache()

    def _shutdown(self, reply: Future[None]) -> None:
        """Unload every model, then answer."""
        for name in list(self._slots):
            self._unload(name)
        while self._embeddings:
            _resolve(self._embeddings.popleft()[0].reply, error=AgentError("the engine stopped"))
        _resolve(reply, None)


def _grammars(model: Any, tokenizer: Any, dialect: Dialect) -> Grammars | None:
    """The model's grammar compiler; None (and no CONSTRAINTS) where llguidance cannot serve it."""
    try:
        return Grammars(tokenizer, width=logits_width(model), dialect=dialect)
    except Exception as exc:  # no llguidance, a slow tokenizer, a vocabulary it cannot read
        logger.warning("mlx: no constrained decoding for this model: %s", exc)
        return None


def _capabilities(
    model: Any, tokenizer: Any, dialect: Dialect, grammars: Grammars | None
) -> frozenset[str]:
    """What the loaded model can serve beyond plain text: embeddings wherever its decoder
    is reachable without its lm_head (every mlx-lm text model)."""
    extra = {LOGPROBS} | ({CONSTRAINTS} if grammars is not None else set())
    extra |= {EMBEDDINGS} if body_of(model) is not None else set()
    return capabilities(tokenizer, dialect) | extra


def _resolve(reply: Future[Any], result: Any = None, *, error: Exception | None = None) -> None:
    """Complete a future unless its caller has already given up on it."""
    try:
        if error is not None:
            reply.set_exception(error)
        else:
            reply.set_result(result)
    except InvalidStateError:
        pass
