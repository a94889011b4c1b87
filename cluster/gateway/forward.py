"""Forwarding one request to a node: choose, stream, fail over before the first token.

Failover is invisible to the client until a token has been sent; after that a node failure ends
the stream with `StreamFailed` carrying the usage so far. A whole (non-streamed) answer sends
nothing until its node has finished, so a node that dies mid-generation only restarts it on
another (`restarts`). Closing the iterator (the client went away) closes the node's stream,
which cancels the generation on the node.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol, TypeVar

from cluster.errors import (
    ApiError,
    InvalidRequest,
    ModelNotFound,
    NoCapacity,
    UpstreamFailed,
    UpstreamTimeout,
)
from cluster.gateway.clients import ClientPool
from cluster.gateway.routing import CHARS_PER_TOKEN, LocalLoad, Router, RouteRequest
from cluster.node_client import (
    NodeClient,
    NodeError,
    NodeModelMissing,
    NodePromptTooLong,
    NodeRejected,
    NodeTimeout,
    NodeUnauthenticated,
    NodeUnavailable,
)
from cluster.types import ModelName, NodeId, NodeTable
from node_agent.types import (
    CONSTRAINTS,
    EMBEDDINGS,
    Embeddings,
    Finished,
    GenerateRequest,
    ReasoningDelta,
    TokenEvent,
    Usage,
)

logger = logging.getLogger(__name__)

# A node that stops proving the secret (restarted with another token) is not serving this
# cluster any more: like one that went away, the request may still go elsewhere.
SLOWEST_PREFILL_TPS = 100.0  # prompt tokens a second: a small CPU node on a long prompt
CONTEXT_LENGTH_EXCEEDED = "context_length_exceeded"  # the error code OpenAI's APIs give it
RETRYABLE = (NodeUnavailable, NodeTimeout, NodeModelMissing, NodeUnauthenticated)
_T = TypeVar("_T")
_E = TypeVar("_E")


@dataclass(frozen=True)
class Routed:
    """The first event: which node serves the request, after how many attempts."""

    node_id: NodeId
    attempts: int


@dataclass(frozen=True)
class StreamFailed:
    """The node failed after the first token; the stream ends here."""

    message: str
    usage: Usage
    # Why: a node that went away or stalled (RETRYABLE) could be replaced by another.
    cause: NodeError | None = dataclasses.field(default=None, compare=False)


ForwardEvent = Routed | TokenEvent | Finished | StreamFailed
NodeEvent = TokenEvent | Finished | StreamFailed


def restarts(last: NodeEvent, whole: bool) -> bool:
    """Whether a request whose node ended with `last` starts again on another node: only a
    whole answer (of which the client has seen nothing yet) cut off by a node that went away
    or stalled; a stream that has sent tokens cannot take them back, and a node's refusal
    would be another's too. Each node is tried once (Forwarder.stream), which bounds it."""
    return whole and isinstance(last, StreamFailed) and isinstance(last.cause, RETRYABLE)


@dataclass(frozen=True, kw_only=True)
class ForwardSettings:
    """How long to wait for a first token and then for each next event, and how many nodes to
    try."""

    first_token_timeout_s: float = 60.0
    # A live agent whose engine hangs keeps its stream open (gRPC keepalive sees only a dead
    # link): without this the client, the node's slot and the ledger row would wait forever.
    idle_timeout_s: float = 120.0
    max_attempts: int = 3


class Tally(Protocol):
    """What the forwarder writes down about one request for its row in the ledger
    (ledger/rows.py): plain fields set where the forwarder already looks at the events, and one
    call at the end. A call per event cost a gateway replica more than the row it made."""

    node_id: NodeId | None  # the node that took it (Routed), None until one did
    attempts: int  # nodes tried by then
    first_at: float | None  # time.monotonic() when its first token came
    final: Finished | StreamFailed | None  # how the node ended it, None while it has not
    prompt: int  # the serving node's counts so far (they matter when the stream is cut short)
    cached: int
    generated: int
    features: set[str]  # what the request used (ledger/rows.py UsageRow.features)

    def end(self, error: BaseException | None) -> None:
        """The stream ended: exhausted or closed (None), or raising `error`."""


class Forwarder:
    """Routes and streams requests for one gateway replica."""

    def __init__(self, router: Router, clients: ClientPool, settings: ForwardSettings) -> None:
        self.router = router
        self.clients = clients
        self.settings = settings
        self.load = LocalLoad()

    def check_model(
        self, table: NodeTable, model: str, needs: frozenset[str] = frozenset()
    ) -> None:
        """404 if no node knows the model; 400 if none serves it with what the request needs
        (tools, constraints, ...); 503 if none that could can take requests now."""
        having = [n for n in table.nodes if model in n.models]
        if not having:
            raise ModelNotFound(f"The model `{model}` does not exist or is not served here.")
        able = [n for n in having if n.can_serve(ModelName(model), needs)]
        if not able:
            missing = sorted(
                needs - set().union(*(n.model_capabilities(ModelName(model)) for n in having))
            )
            what = ", ".join(missing or sorted(needs))
            raise InvalidRequest(
                f"No node serves `{model}` with {what} (its agents are older, or its chat "
                "template has no tool markup)."
            )
        if not any(n.routable for n in able):
            raise NoCapacity(f"No node can serve `{model}` right now.", retry_after=2)

    async def count_tokens(
        self, table: NodeTable, request: GenerateRequest, route: RouteRequest
    ) -> int:
        """The request's prompt in tokens, counted by a node that serves its model (the one the
        router would choose); a node that fails is replaced by the next, as for a stream."""
        self.check_model(table, request.model, request.needs())
        return (await self._call(table, route, lambda client: client.count_tokens(request)))[1]

    async def embed(
        self,
        table: NodeTable,
        model: str,
        inputs: list[str],
        route: RouteRequest,
        tally: Tally | None = None,
    ) -> tuple[NodeId, Embeddings]:
        """One embedding per input, by a node whose `model` makes them (failed over as
        `count_tokens` is), and that node; `tally` is filled in and ended as a stream's is."""
        error: BaseException | None = None
        route = dataclasses.replace(route, needs=route.needs | {EMBEDDINGS})
        try:
            self._check_embeds(table, model)
            node_id, got = await self._call(
                table, route, lambda client: client.embed(model, inputs), tally
            )
            if tally is not None:
                tally.prompt = got.prompt_tokens
                tally.final = Finished("stop", _prompt_only(got.prompt_tokens))
            return node_id, got
        except BaseException as exc:
            error = exc
            raise
        finally:
            if tally is not None:
                tally.end(error)

    def _check_embeds(self, table: NodeTable, model: str) -> None:
        """check_model for embeddings, with their own reason when no node makes them."""
        try:
            self.check_model(table, model, frozenset({EMBEDDINGS}))
        except InvalidRequest:
            raise InvalidRequest(
                f"No node serves embeddings of `{model}` (on vLLM a model makes them only when "
                "loaded with the option runner=pooling; agents older than embeddings make none).",
                param="model",
            ) from None

    async def _call(
        self,
        table: NodeTable,
        route: RouteRequest,
        call: Callable[[NodeClient], Awaitable[_T]],
        tally: Tally | None = None,
    ) -> tuple[NodeId, _T]:
        """One unary call on the node the router chooses, and that node; a node that fails is
        replaced by the next, as for a stream, and one that rejects the request makes it a 400."""
        tried: set[NodeId] = set()
        last_error: NodeError | None = None
        while len(tried) < self.settings.max_attempts:
            node_id = self.router.choose(table, route, self.load, frozenset(tried))
            node = None if node_id is None else table.get(node_id)
            if node_id is None or node is None:
                break
            tried.add(node_id)
            if tally is not None:
                tally.node_id, tally.attempts = node_id, len(tried)
            client = self.clients.get(node.address, plaintext=node.plaintext)
            try:
                return node_id, await call(client)
            except NodePromptTooLong as exc:
                raise InvalidRequest(_node_message(exc), code=CONTEXT_LENGTH_EXCEEDED) from None
            except NodeRejected as exc:
                raise InvalidRequest(_node_message(exc)) from None
            except NodeError as exc:  # down, or an agent too old for the call
                logger.info("node %s failed a call for %s: %s", node_id, route.model, exc)
                last_error = exc
        raise _exhausted(last_error, route.model)

    async def stream(
        self,
        table: NodeTable,
        request: GenerateRequest,
        route: RouteRequest,
        tally: Tally | None = None,
        *,
        whole: bool = False,
    ) -> AsyncGenerator[ForwardEvent, None]:
        """Routed, then Deltas, then Finished or StreamFailed; raises ApiError before any.
        `whole`: the consumer sends nothing before Finished, so Routed comes once the node has
        finished, and a node that fails before then is replaced as if before its first token.

        `tally` is filled in as the events pass, and its `end` is called exactly once, however
        the stream ends (with the error, if one was raised; GeneratorExit and CancelledError,
        the client leaving, are not errors). It is filled in here, not by an async generator
        wrapped around this one: one more generator layer cost a replica about 140 us a request."""
        error: BaseException | None = None
        try:
            needs = request.needs()
            if needs != route.needs:
                route = dataclasses.replace(route, needs=needs)
            if tally is not None:
                tally.features.update(_features(request))
            self.check_model(table, request.model, needs)
            tried: set[NodeId] = set()
            last_error: NodeError | None = None
            self.load.tick(time.monotonic())
            while len(tried) < self.settings.max_attempts:
                node_id = self.router.choose(table, route, self.load, frozenset(tried))
                if node_id is None:
                    break
                tried.add(node_id)
                node = table.get(node_id)
                assert node is not None
                client = self.clients.get(node.address, plaintext=node.plaintext)
                events = self._attempt(client, node_id, request, route, tally)
                try:
                    held = await self._opening(events, route, whole)
                except RETRYABLE as exc:
                    logger.info("node %s failed before its answer was sent: %s", node_id, exc)
                    await events.aclose()
                    last_error = exc
                    continue
                except NodeError as exc:
                    await events.aclose()
                    raise UpstreamFailed(f"node {node_id} failed: {_node_message(exc)}") from None
                if tally is not None:
                    tally.node_id, tally.attempts = node_id, len(tried)
                try:
                    yield Routed(node_id, len(tried))
                    for event in held:
                        yield event
                    async for event in events:
                        yield event
                finally:  # now, not by the event loop's finalizer, in a task of its own
                    await events.aclose()
                return
            raise _exhausted(last_error, request.model)
        except (GeneratorExit, asyncio.CancelledError):
            raise
        except BaseException as exc:
            error = exc
            raise
        finally:
            if tally is not None:
                tally.end(error)

    def first_token_deadline_s(self, route: RouteRequest) -> float:
        """How long a node may take to its first token: the setting, plus the prompt's prefill
        at the slowest rate a node could still be serving at (a coding agent's 20k-token prompt
        on a small Mac), so that a long prompt is not failed over as if the node had hung."""
        prefill_tokens = route.prompt_chars / CHARS_PER_TOKEN
        return self.settings.first_token_timeout_s + prefill_tokens / SLOWEST_PREFILL_TPS

    async def _opening(
        self, events: AsyncIterator[NodeEvent], route: RouteRequest, whole: bool
    ) -> list[NodeEvent]:
        """The events to send once the request is routed: the first, or for a whole answer all
        of them, raising the node's error when it should be replaced (`restarts`)."""
        held = [await self._first(events, self.first_token_deadline_s(route))]
        if whole:
            held += [event async for event in events]
            if restarts(held[-1], whole):
                assert isinstance(held[-1], StreamFailed) and held[-1].cause is not None
                raise held[-1].cause
        return held

    async def _first(self, events: AsyncIterator[NodeEvent], deadline_s: float) -> NodeEvent:
        try:
            async with asyncio.timeout(deadline_s):
                return await anext(events)
        except TimeoutError:
            raise NodeTimeout("no first token in time") from None
        except StopAsyncIteration:
            raise NodeUnavailable("stream ended before any event") from None

    async def _attempt(
        self,
        client: NodeClient,
        node_id: NodeId,
        request: GenerateRequest,
        route: RouteRequest,
        tally: Tally | None,
    ) -> AsyncGenerator[NodeEvent, None]:
        self.load.start(node_id, route.expected_tokens)
        remaining, generated, started = route.expected_tokens, 0, time.monotonic()
        prompt = cached = 0
        streamed = False  # whether the node has sent its first event
        stream = client.generate(request)
        try:
            while True:
                try:
                    event = await self._next(stream, streamed)
                except StopAsyncIteration:
                    break
                if isinstance(event, ReasoningDelta) and tally is not None:
                    tally.features.add("reasoning")
                if not isinstance(event, Finished):
                    if not streamed:  # the prompt is in the node's cache from now on
                        streamed = True
                        self.router.record(route, node_id)
                        prompt, cached = event.prompt_tokens, event.cached_prompt_tokens
                        if tally is not None:
                            tally.first_at = time.monotonic()
                    generated += event.tokens
                    # Never more than this request still had: others' share must stay counted.
                    self.load.progress(node_id, min(event.tokens, max(remaining, 0)))
                    remaining -= event.tokens
                elif isinstance(event, Finished):  # what the way here added to the node's time
                    now = time.monotonic()
                    self.load.delivered(node_id, now - started - event.usage.duration_seconds, now)
                    if tally is not None:
                        tally.final = event
                yield event
        except NodePromptTooLong as exc:
            raise InvalidRequest(_node_message(exc), code=CONTEXT_LENGTH_EXCEEDED) from None
        except NodeRejected as exc:
            raise InvalidRequest(_node_message(exc)) from None
        except NodeError as exc:
            if not streamed:
                raise
            usage = Usage(
                prompt_tokens=prompt,
                completion_tokens=generated,
                cached_prompt_tokens=cached,
                ttft_seconds=0.0,
                decode_tokens_per_second=0.0,
                duration_seconds=time.monotonic() - started,
            )
            failed = StreamFailed(f"node {node_id} failed mid-stream: {exc}", usage, exc)
            if tally is not None:
                tally.final = failed
            yield failed
        finally:
            if tally is not None:
                tally.prompt, tally.cached, tally.generated = prompt, cached, generated
            self.load.finish(node_id, max(remaining, 0), time.monotonic())
            await stream.aclose()  # type: ignore[attr-defined]  # cancels the call on the node

    async def _next(self, stream: AsyncIterator[_E], streamed: bool) -> _E:
        """The node's next event; once it has streamed, within the idle timeout (a NodeTimeout
        then ends the stream as StreamFailed). The first event has its own deadline (_first)."""
        if not streamed:
            return await anext(stream)
        try:
            async with asyncio.timeout(self.settings.idle_timeout_s):
                return await anext(stream)
        except TimeoutError:
            idle = self.settings.idle_timeout_s
            raise NodeTimeout(f"no event for {idle:g}s (the engine stalled)") from None


def _node_message(exc: NodeError) -> str:
    # "host:port: message" -> "message": the client has no use for our node addresses.
    return str(exc).split(": ", 1)[-1]


def _exhausted(last: NodeError | None, model: str) -> ApiError:
    if isinstance(last, NodeTimeout):
        return UpstreamTimeout(f"No node answered `{model}` in time.")
    detail = f" (last error: {_node_message(last)})" if last else ""
    return NoCapacity(f"No node can serve `{model}` right now{detail}.", retry_after=2)


def _prompt_only(tokens: int) -> Usage:
    """The usage of a request that only read its prompt (an embedding)."""
    return Usage(
        prompt_tokens=tokens,
        completion_tokens=0,
        cached_prompt_tokens=0,
        ttft_seconds=0.0,
        decode_tokens_per_second=0.0,
        duration_seconds=0.0,
    )


def _features(request: GenerateRequest) -> set[str]:
    """What the request asks for, as the ledger records it (UsageRow.features)."""
    out = {"tools"} if request.tools else set()
    if CONSTRAINTS in request.needs() or any(t.strict for t in request.tools):
        out.add("constrained")
    return out
