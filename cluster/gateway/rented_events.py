"""A request of any dialect, served by an `openai` provider, as the events a node would send.

The forwarder's contract holds (forward.py): Routed once the provider has sent its first event,
then the events, then Finished; an ApiError before Routed means nothing was sent, so the caller
may still serve the request elsewhere (overflow falls back to a local node). The tally records
it as served by `provider:<name>`, with the usage the provider reported.

Errors before the first event: the provider's own 400/404/413/422 about the request are a 400
(its message passed on), 429 is a 429; a refused key is 502 (the admin's to fix); a provider
that cannot be reached or fails is 503, one too slow 504. After it, a failure ends the stream as
StreamFailed, as a node's would.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncGenerator
from typing import Any, Protocol

import httpx

from cluster.errors import (
    ApiError,
    InvalidRequest,
    NoCapacity,
    RateLimited,
    UpstreamFailed,
    UpstreamTimeout,
)
from cluster.gateway.forward import ForwardEvent, Routed, StreamFailed, Tally
from cluster.ledger.rows import RENTED_PREFIX
from cluster.providers import anthropic_wire, openai_wire
from cluster.providers.book import Upstream
from cluster.types import NodeId
from node_agent.types import Finished, GenerateRequest, TokenEvent, Usage

logger = logging.getLogger(__name__)

REQUEST_ERRORS = frozenset({400, 404, 413, 422})  # the provider's word on the request itself


class Reader(Protocol):
    """A provider's stream events, read into a node's events (one reader per answer)."""

    def read(self, event: dict[str, Any]) -> list[TokenEvent]:
        """The events in one of the provider's stream events."""
        ...

    def end(self, duration_s: float, ttft_s: float) -> list[TokenEvent | Finished]:
        """The events that close the answer, Finished last."""
        ...


class Wire(Protocol):
    """A provider dialect: openai_wire.py or anthropic_wire.py."""

    def path(self, request: GenerateRequest) -> str:
        """The endpoint under the provider's base URL."""
        ...

    def headers(self, api_key: str) -> dict[str, str]:
        """The headers that carry the key."""
        ...

    def request_body(self, request: GenerateRequest, remote_model: str) -> dict[str, Any]:
        """The request's JSON, streamed."""
        ...

    def reader(self) -> Reader:
        """A reader for one answer."""
        ...


def wire(kind: str) -> Wire:
    """The dialect of a provider of `kind`."""
    return anthropic_wire if kind == "anthropic" else openai_wire


async def events(
    client: httpx.AsyncClient,
    upstream: Upstream,
    api_key: str,
    request: GenerateRequest,
    tally: Tally | None,
    timeout: httpx.Timeout,
) -> AsyncGenerator[ForwardEvent, None]:
    """Routed, then the provider's events, then Finished or StreamFailed; the tally ends once."""
    error: BaseException | None = None
    node = NodeId(RENTED_PREFIX + upstream.provider.name)
    if tally is not None:
        tally.node_id, tally.attempts = node, 1
    try:
        dialect = wire(upstream.provider.kind)
        body = dialect.request_body(request, upstream.route.remote_model)
        url = upstream.provider.base_url + dialect.path(request)
        headers = dialect.headers(api_key)
        sent = client.build_request("POST", url, json=body, headers=headers, timeout=timeout)
        started = time.monotonic()
        response = await _send(client, sent, upstream)
        try:
            async for event in _read(response, dialect.reader(), upstream, tally, started):
                if event is None:
                    yield Routed(node, 1)
                else:
                    yield event
        finally:
            await response.aclose()
    except (GeneratorExit, asyncio.CancelledError):
        raise
    except BaseException as exc:
        error = exc
        raise
    finally:
        if tally is not None:
            tally.end(error)


async def _send(
    client: httpx.AsyncClient, request: httpx.Request, upstream: Upstream
) -> httpx.Response:
    """The provider's streamed response, or the ApiError of one that took nothing."""
    name = upstream.provider.name
    try:
        response = await client.send(request, stream=True)
    except httpx.TimeoutException:
        raise UpstreamTimeout(f"{name} did not answer in time") from None
    except httpx.HTTPError as exc:
        raise NoCapacity(f"{name} cannot be reached: {type(exc).__name__}", retry_after=5) from None
    if response.status_code == 200:
        return response
    await response.aread()
    await response.aclose()
    raise _refusal(name, response)


def _refusal(name: str, response: httpx.Response) -> ApiError:
    """The error for a request the provider did not take; its body is shown only where it is
    about the request (a provider may quote part of a key it refused)."""
    status = response.status_code
    if status in REQUEST_ERRORS:
        try:
            message = str(response.json()["error"]["message"])
        except (ValueError, KeyError, TypeError):
            message = response.text[:500]
        return InvalidRequest(f"{name}: {message}")
    logger.warning("provider %s answered %d", name, status)
    if status == 429:
        return RateLimited(f"{name} is rate limiting the cluster", retry_after=5)
    if status in (401, 403):
        return UpstreamFailed(f"{name} refused the cluster's key for it ({status})")
    return NoCapacity(f"{name} failed the request ({status})", retry_after=5)


async def _read(
    response: httpx.Response,
    reader: Reader,
    upstream: Upstream,
    tally: Tally | None,
    started: float,
) -> AsyncGenerator[TokenEvent | Finished | StreamFailed | None, None]:
    """None when the first event came (Routed goes there), then the events; the tally filled in."""
    first = None
    try:
        async for line in response.aiter_lines():
            if not line.startswith("data:") or line[5:].strip() == "[DONE]":
                continue
            try:
                chunk = json.loads(line[5:])
            except ValueError:  # not an event a client could read either
                logger.warning("provider %s sent an event that is not JSON", upstream.provider.name)
                continue
            for event in reader.read(chunk):
                if first is None:
                    first = time.monotonic()
                    if tally is not None:
                        tally.first_at = first
                    yield None
                yield event
    except (httpx.HTTPError, ApiError) as exc:
        if first is None:
            raise _cut(upstream, exc) from None
        yield _failed(upstream, exc, tally, started)
        return
    now = time.monotonic()
    closing = reader.end(now - started, 0.0 if first is None else first - started)
    if first is None:
        yield None  # an answer with nothing in it (max_tokens 0): still an answer
    for ending in closing:
        if isinstance(ending, Finished) and tally is not None:
            tally.final = ending
        yield ending


def _cut(upstream: Upstream, exc: httpx.HTTPError | ApiError) -> ApiError:
    name = upstream.provider.name
    if isinstance(exc, ApiError):
        return NoCapacity(f"{name} failed: {exc.message}", retry_after=5)
    if isinstance(exc, httpx.TimeoutException):
        return UpstreamTimeout(f"{name} did not answer in time")
    return NoCapacity(f"{name} failed: {type(exc).__name__}", retry_after=5)


def _failed(
    upstream: Upstream, exc: httpx.HTTPError | ApiError, tally: Tally | None, started: float
) -> StreamFailed:
    zero = Usage(
        prompt_tokens=0,
        completion_tokens=0,
        cached_prompt_tokens=0,
        ttft_seconds=0.0,
        decode_tokens_per_second=0.0,
        duration_seconds=time.monotonic() - started,
    )
    failed = StreamFailed(f"{upstream.provider.name} failed mid-stream: {type(exc).__name__}", zero)
    if tally is not None:
        tally.final = failed
    return failed
