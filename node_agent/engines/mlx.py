"""The MLX engine: mlx-lm models on Apple Silicon (or MLX's CPU build), continuously batched.

Layers, each small: `MlxEngine` (here) is the asyncio face and validates requests; one
`mlx_batch.Worker` thread owns MLX and every model; per model, `mlx_slot.ModelSlot` runs the
batch and the prompt cache; per request, `mlx_stream.RequestStream` turns tokens into events
(answer, reasoning, tool calls: `parsing.OutputParser`), and a grammar, compiled here before the
request is submitted, masks its row of the batch (`mlx_grammar`). Embeddings are the model's
mean-pooled hidden states, computed on the worker between decode steps (`mlx_embed`).
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import time
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import Future
from typing import Any

from node_agent.engines.base import LoadSpec
from node_agent.engines.common import (
    available_memory_bytes,
    check_request,
    embedding_ids,
    render_prompt,
)
from node_agent.engines.mlx_batch import Cancel, Embed, Load, Shutdown, Submit, Unload, Worker
from node_agent.engines.mlx_grammar import GrammarProcessor
from node_agent.engines.mlx_options import batch_limits
from node_agent.engines.mlx_slot import BatchLimits
from node_agent.engines.mlx_stream import Sink
from node_agent.engines.parsing import tool_parser_option
from node_agent.errors import AgentError, InvalidRequest, ModelNotLoaded
from node_agent.types import (
    CONSTRAINTS,
    EMBEDDINGS,
    Delta,
    Finished,
    GenerateEvent,
    GenerateRequest,
    ModelInfo,
    ModelStatus,
)

MAX_TOP_LOGPROBS = 20


class MlxEngine:
    """The Engine protocol over mlx-lm; see the module docstring for its layers."""

    name = "mlx"

    def __init__(
        self,
        *,
        limits: BatchLimits | None = None,
        available_memory: Callable[[], int] | None = None,
        max_steps_per_s: float = 0.0,
        **options: str,
    ) -> None:
        # `tool_parser` is also a load option; the others are the batch's, fixed at start.
        self._tool_parser, batch_options = tool_parser_option(options)
        limits = batch_limits(batch_options, limits)  # bad options fail before the worker starts
        if max_steps_per_s > 0:
            limits = dataclasses.replace(limits, step_interval_s=1.0 / max_steps_per_s)
        self._worker = Worker(
            limits=limits,
            available_memory=available_memory or available_memory_bytes,
        )
        self._worker.start()
        self._tickets = itertools.count()
        self._closed = False

    async def load(self, spec: LoadSpec) -> ModelInfo:
        """Load a model on the worker; raises OutOfMemory, LoadFailed or InvalidRequest."""
        self._check_open()
        if spec.context_length < 0:
            raise InvalidRequest(f"context_length must be >= 0, got {spec.context_length}")
        tool_parser = tool_parser_option(spec.options)[0] or self._tool_parser
        spec = dataclasses.replace(spec, options={**spec.options, "tool_parser": tool_parser})
        reply: Future[ModelInfo] = Future()
        self._worker.send(Load(spec, reply))
        return await asyncio.wrap_future(reply)

    async def unload(self, name: str) -> None:
        """Unload a model, ending its requests as cancelled; raises ModelNotLoaded."""
        self._check_open()
        reply: Future[None] = Future()
        self._worker.send(Unload(name, reply))
        await asyncio.wrap_future(reply)

    def models(self) -> list[ModelInfo]:
        """The models loaded now."""
        return self._worker.infos()

    def status(self) -> list[ModelStatus]:
        """Live counters per loaded model."""
        return self._worker.statuses()

    async def generate(self, request: GenerateRequest) -> AsyncIterator[GenerateEvent]:
        """Stream Deltas then one Finished; closing the stream early cancels the generation."""
        self._check_open()
        info = self._worker.info(request.model)
        if info is None:
            raise ModelNotLoaded(f"model {request.model!r} is not loaded on this node")
        check_request(request)
        submitted_at = time.perf_counter()  # the grammar's compile time is part of TTFT
        processor = await self._processor(request)
        rendered = await self._rendered(request, constrained=processor is not None)
        queue: asyncio.Queue[Any] = asyncio.Queue()
        events, ticket = _Events(queue), next(self._tickets)
        sink = Sink(asyncio.get_running_loop(), queue)
        self._worker.send(Submit(ticket, request, sink, submitted_at, processor, rendered))
        finished = False
        try:
            while not finished:
                event = await events.next()
                finished = isinstance(event, Finished)
                yield event
        finally:
            if not finished:  # the reader left early, or the worker reported an error
                self._worker.send(Cancel(ticket))

    async def _rendered(
        self, request: GenerateRequest, *, constrained: bool
    ) -> tuple[Any, list[int]] | None:
        """The prompt's tokens and the tokenizer that made them, rendered in a thread of its
        own: on the worker a long prompt would stall every other stream's decoding."""
        tokenizer = self._worker.tokenizer(request.model)
        if tokenizer is None:
            return None  # the worker says why
        tokens = await asyncio.to_thread(render_prompt, tokenizer, request, constrained=constrained)
        return tokenizer, tokens

    async def count_tokens(self, request: GenerateRequest) -> int:
        """The prompt's length in tokens, rendered off the worker thread as a Submit would be."""
        self._check_open()
        tokenizer = self._worker.tokenizer(request.model)
        if tokenizer is None:
            raise ModelNotLoaded(f"model {request.model!r} is not loaded on this node")
        return len(await asyncio.to_thread(render_prompt, tokenizer, request))

    async def embed(self, model: str, inputs: Sequence[str]) -> tuple[list[list[float]], int]:
        """Mean-pooled, unit-length hidden states, tokenised here and run on the worker."""
        self._check_open()
        info, tokenizer = self._worker.info(model), self._worker.tokenizer(model)
        if info is None or tokenizer is None:
            raise ModelNotLoaded(f"model {model!r} is not loaded on this node")
        if EMBEDDINGS not in info.capabilities:
            raise InvalidRequest(f"model {model!r} cannot make embeddings on this node")
        ids = await asyncio.to_thread(embedding_ids, tokenizer, inputs, info.context_length)
        reply: Future[list[list[float]]] = Future()
        self._worker.send(Embed(model, ids, reply))
        return await asyncio.wrap_future(reply), sum(map(len, ids))

    async def close(self) -> None:
        """Cancel everything, free every model and stop the worker thread."""
        if self._closed:
            return
        self._closed = True
        reply: Future[None] = Future()
        self._worker.send(Shutdown(reply))
        await asyncio.wrap_future(reply)
        await asyncio.to_thread(self._worker.join)

    async def _processor(self, request: GenerateRequest) -> GrammarProcessor | None:
        """The request's grammar compiled for its row, in a thread: the worker only steps it."""
        if request.top_logprobs is not None and not 0 <= request.top_logprobs <= MAX_TOP_LOGPROBS:
            raise InvalidRequest(f"top_logprobs must be between 0 and {MAX_TOP_LOGPROBS}")
        grammars = self._worker.grammars(request.model)
        if grammars is None:
            if CONSTRAINTS in request.needs():
                raise InvalidRequest("this model cannot be held to a grammar on this node")
            return None  # strict tools in auto: parsed, not enforced
        grammar = grammars.grammar(request)
        return None if grammar is None else await asyncio.to_thread(grammars.compile, grammar)

    def _check_open(self) -> None:
        """Refuse work once closed: the worker no longer answers."""
        if self._closed:
            raise AgentError("the MLX engine is closed")


class _Events:
    """One request's events off its queue; Deltas that piled up behind a slow reader merge."""

    def __init__(self, queue: asyncio.Queue[Any]) -> None:
        self._queue = queue
        self._held: Any = None

    async def next(self) -> GenerateEvent:
        """The next event, or raise the error the worker sent instead."""
        got, self._held = self._held or await self._queue.get(), None
        if isinstance(got, Exception):
            raise got
        event: GenerateEvent = got
        while isinstance(event, Delta) and not self._queue.empty():
            following = self._queue.get_nowait()
            if not isinstance(following, Delta):
                self._held = following
                break
            event = Delta(
                event.text + following.text,
                event.tokens + following.tokens,
                event.prompt_tokens,
                event.cached_prompt_tokens,
                event.logprobs + following.logprobs,
            )
        return event
