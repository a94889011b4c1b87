"""Chat completions a provider serves: the client's OpenAI request, sent on over HTTP.

The request goes to `<base URL>/chat/completions` as the client wrote it, but for the model
(the route's remote model) and, when streamed, with `stream_options.include_usage` so that the
provider reports what it served; the answer comes back under the name the client asked for,
the usage chunk only if the client asked for it. The provider's key is read from its file for
each request and sent to that provider only.

Errors: the provider's own 4xx answers about the request (400, 404, 413, 422, 429) reach the
client as they are, in OpenAI's shape already; a provider that refuses its key is 502 (the
admin's to fix, not the client's); one that cannot be reached or fails is 503, one too slow 504.
Each request is tallied as if a node named `provider:<name>` had served it.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import AsyncGenerator
from typing import Any, cast

import httpx

from cluster.access.keys import Grant
from cluster.access.request_gate import RequestGate
from cluster.errors import ApiError, NoCapacity, UpstreamFailed, UpstreamTimeout
from cluster.gateway import front
from cluster.gateway.openai.response import Answer, json_response
from cluster.gateway.tally import Tap
from cluster.ledger.rows import RENTED_PREFIX
from cluster.providers.book import RouteBook, Upstream
from cluster.providers.specs import ProviderError
from cluster.types import NodeId
from node_agent.types import Finished, Usage

logger = logging.getLogger(__name__)

PASSED_ON = frozenset({400, 404, 413, 422, 429})  # the provider's word on the request itself
TIMEOUT = httpx.Timeout(connect=10.0, read=300.0, write=60.0, pool=10.0)


class Renting:
    """A gateway replica's way to its providers: the routes, and one HTTP client for them all."""

    def __init__(self, book: RouteBook) -> None:
        self.book = book
        self._client: httpx.AsyncClient | None = None  # made on the replica's loop, when needed

    async def answer(
        self, upstream: Upstream, body: bytes, gate: RequestGate, grant: Grant, tap: Tap | None
    ) -> Answer:
        """The provider's answer to a chat request let in with `grant`; its slot is given
        back when the answer (or its stream) ends."""
        try:
            key = self.key_of(upstream)
        except UpstreamFailed:
            gate.release(grant)
            raise
        try:
            answer = await chat(self.client(), upstream, key, json.loads(body), tap)
        except BaseException:
            gate.release(grant)
            raise
        if isinstance(answer, front.EventStream):
            frames = cast(AsyncGenerator[bytes, None], answer.frames)  # _frames made them
            answer.frames = gate.hold(grant, frames)
        else:
            gate.release(grant)
        return answer

    def client(self) -> httpx.AsyncClient:
        """The one HTTP client for every provider, made on the replica's loop when first used."""
        if self._client is None:
            self._client = httpx.AsyncClient()
        return self._client

    def key_of(self, upstream: Upstream) -> str:
        """The provider's key; a 502 (the admin's to fix) when it cannot be read."""
        try:
            return self.book.key(upstream)
        except ProviderError as exc:
            logger.error("%s", exc)
            raise UpstreamFailed(f"the key of {upstream.provider.name} cannot be read") from None


async def chat(
    client: httpx.AsyncClient,
    upstream: Upstream,
    api_key: str,
    body: dict[str, Any],
    tap: Tap | None,
) -> Answer:
    """Send a parsed chat request to its provider; its answer (JSON or an event stream)."""
    asked = str(body.get("model"))
    stream = bool(body.get("stream"))
    wants_usage = bool((body.get("stream_options") or {}).get("include_usage"))
    out = {**body, "model": upstream.route.remote_model}
    if stream:
        out["stream_options"] = {**(body.get("stream_options") or {}), "include_usage": True}
    if tap is not None:
        tap.node_id, tap.attempts = NodeId(RENTED_PREFIX + upstream.provider.name), 1
    url = f"{upstream.provider.base_url}/chat/completions"
    request = client.build_request(
        "POST", url, json=out, headers={"authorization": f"Bearer {api_key}"}, timeout=TIMEOUT
    )
    started = time.monotonic()
    try:
        response = await client.send(request, stream=stream)
    except httpx.TimeoutException:
        raise _failed(
            tap, UpstreamTimeout(f"{upstream.provider.name} did not answer in time")
        ) from None
    except httpx.HTTPError as exc:
        raise _failed(
            tap, NoCapacity(f"{upstream.provider.name} cannot be reached: {exc}")
        ) from None
    if response.status_code != 200:
        await response.aread()
        await response.aclose()
        return _refused(upstream, response, tap)
    if not stream:
        try:
            data = response.json()
        except ValueError:
            name = upstream.provider.name
            raise _failed(tap, UpstreamFailed(f"{name} answered with no JSON")) from None
        _record(tap, data.get("usage"), _finish(data), started, started)
        return json_response({**data, "model": asked})
    frames = _frames(response, asked, wants_usage, tap, started)
    return front.EventStream(frames, {"x-meterless-node": RENTED_PREFIX + upstream.provider.name})


async def _frames(
    response: httpx.Response, asked: str, wants_usage: bool, tap: Tap | None, started: float
) -> AsyncGenerator[bytes, None]:
    """The provider's events under the name asked for; records the request however it ends."""
    usage: dict[str, Any] | None = None
    finish, first = "", None
    try:
        async for line in response.aiter_lines():
            if not line.startswith("data:"):
                continue
            data = line[5:].strip()
            if data == "[DONE]":
                yield b"data: [DONE]\n\n"
                continue
            try:
                chunk = json.loads(data)
            except ValueError:  # not an event a client could read either
                logger.warning("a provider sent an event that is not JSON; left out")
                continue
            first = first or time.monotonic()
            usage = chunk.get("usage") or usage
            finish = _finish(chunk) or finish
            if not chunk.get("choices") and chunk.get("usage") and not wants_usage:
                continue  # the usage chunk we asked for, not the client
            if not wants_usage:
                chunk.pop("usage", None)
            yield b"data: " + json.dumps({**chunk, "model": asked}).encode() + b"\n\n"
    finally:
        await response.aclose()
        _record(tap, usage, finish, started, first)


def _finish(data: dict[str, Any]) -> str:
    choices = data.get("choices") or [{}]
    return str(choices[0].get("finish_reason") or "")


def _record(
    tap: Tap | None, usage: dict[str, Any] | None, finish: str, started: float, first: float | None
) -> None:
    """Fill in the tally from the provider's reported usage, and end it (the ledger's row)."""
    if tap is None:
        return
    tap.first_at = first
    if usage is not None and finish:
        details = usage.get("prompt_tokens_details") or {}
        tap.final = Finished(
            finish_reason=finish,
            usage=Usage(
                prompt_tokens=int(usage.get("prompt_tokens") or 0),
                completion_tokens=int(usage.get("completion_tokens") or 0),
                cached_prompt_tokens=int(details.get("cached_tokens") or 0),
                ttft_seconds=0.0 if first is None else first - started,
                decode_tokens_per_second=0.0,
                duration_seconds=time.monotonic() - started,
            ),
        )
    tap.end(None)


def _refused(upstream: Upstream, response: httpx.Response, tap: Tap | None) -> Answer:
    """The provider's answer to a request it did not serve, as the client should see it.

    Its body is neither logged nor, past the statuses passed on, shown: a provider may quote
    part of the key it refused.
    """
    name, status = upstream.provider.name, response.status_code
    if status in PASSED_ON:
        _failed(tap, UpstreamFailed(f"{name} refused the request ({status})"))
        try:
            body = response.json()
        except ValueError:
            body = {"error": {"message": response.text[:500], "type": "invalid_request_error"}}
        answer = json_response(body)
        answer.status_code = status
        return answer
    logger.warning("provider %s answered %d", name, status)
    if status in (401, 403):
        raise _failed(tap, UpstreamFailed(f"{name} refused the cluster's key for it ({status})"))
    raise _failed(tap, NoCapacity(f"{name} failed the request ({status})", retry_after=5))


def _failed(tap: Tap | None, error: ApiError) -> ApiError:
    """End the tally of a request the provider did not serve (an error row); the error."""
    if tap is not None:
        tap.end(error)
    return error
