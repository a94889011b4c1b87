"""A gateway replica's request gate: the key table it follows, requests in flight per key, admin.

The decisions are cluster/access/keys.py's; this holds the state they need. The key table comes from
the controller's long poll (`follow`), never from a query on the request path. Concurrency is
counted per replica: with N gateway replicas a key may have up to N x `max_concurrent` in flight.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncGenerator, Awaitable, Callable
from typing import TypeVar

from cluster.access.keys import (
    Grant,
    KeyTable,
    admin_ok,
    authorize,
    bearer,
    check_rented,
    identify,
)
from cluster.errors import NoCapacity, Unauthorized

logger = logging.getLogger(__name__)

T = TypeVar("T")


class RequestGate:
    """Who may use this replica's endpoint and admin API."""

    def __init__(
        self,
        *,
        keys_required: bool,
        admin_digest: str,
        metrics_open: bool,
        local_only: bool = False,
    ) -> None:
        self.keys_required = keys_required
        self.local_only = local_only  # no request goes to a provider, whatever its key
        self.admin_digest = admin_digest
        self.metrics_open = metrics_open
        self.table = KeyTable()
        self.inflight: dict[str, int] = {}

    async def follow(self, wait: Callable[[int], Awaitable[KeyTable]]) -> None:
        """Keep the key table current: long-poll the controller for each newer version."""
        while True:
            try:
                self.table = await wait(self.table.version)
            except Exception as exc:  # the controller restarting: keep the last table
                logger.warning("key table long poll failed: %s", exc)
                await asyncio.sleep(0.5)

    def let_in(self, authorization: str | None, model: str, provider: str | None = None) -> Grant:
        """Let a request for `model` (served by `provider`, if rented) in, or raise 401/403/429;
        counts it as in flight."""
        self._ready()
        grant = authorize(
            self.table,
            bearer(authorization),
            model=model,
            inflight=self.inflight,
            required=self.keys_required,
        )
        if provider is not None:
            check_rented(grant, model=model, provider=provider, local_only=self.local_only)
        if grant.key_id is not None:
            self.inflight[grant.key_id] = self.inflight.get(grant.key_id, 0) + 1
        return grant

    def may_rent(self, grant: Grant) -> bool:
        """Whether a request under `grant` may go to a provider: neither its key nor the
        cluster is local-only."""
        return not self.local_only and not (grant.key is not None and grant.key.local_only)

    def identify(self, authorization: str | None) -> Grant:
        """The key of a request that uses no model (`/v1/models`), or raise 401."""
        self._ready()
        return identify(self.table, bearer(authorization), required=self.keys_required)

    def hold(self, grant: Grant, events: AsyncGenerator[T, None]) -> AsyncGenerator[T, None]:
        """The same events; the key's slot is given back however the stream ends.

        A request without a key holds no slot, so its events pass through as they are: one
        generator layer fewer on every token.
        """
        return events if grant.key_id is None else self._held(grant, events)

    async def _held(self, grant: Grant, events: AsyncGenerator[T, None]) -> AsyncGenerator[T, None]:
        try:
            async for event in events:
                yield event
        finally:
            try:
                await events.aclose()
            finally:
                self._release(grant)

    def release(self, grant: Grant) -> None:
        """Give back a slot taken by `let_in` for a request that never started."""
        self._release(grant)

    def admin(self, authorization: str | None) -> None:
        """Raise 401 unless the request carries the admin token."""
        if not admin_ok(bearer(authorization), self.admin_digest):
            raise Unauthorized(
                "The admin API needs the admin token: `Authorization: Bearer "
                "<token>` (the head's config dir has it).",
                code="invalid_admin_token",
            )

    def metrics(self, authorization: str | None) -> None:
        """Raise 401 unless /metrics is open here or the request carries the admin token."""
        if not self.metrics_open:
            self.admin(authorization)

    def _ready(self) -> None:
        if self.keys_required and self.table.version == 0:
            raise NoCapacity("The gateway has not received the API keys yet.", retry_after=1)

    def _release(self, grant: Grant) -> None:
        key_id = grant.key_id
        if key_id is None:
            return
        left = self.inflight.get(key_id, 0) - 1
        if left > 0:
            self.inflight[key_id] = left
        else:
            self.inflight.pop(key_id, None)
