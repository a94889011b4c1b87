"""The routes and providers as a gateway sees them: read from the head's config dir, and read
again when `cluster route` or `cluster providers` change the files there.

A gateway asks on every chat request whether its model is rented, so the answer comes from
memory; the files' inodes and modification times are looked at no more than once a `check_every_s`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from cluster.providers import store
from cluster.providers.specs import Provider, ProviderError, Route

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Upstream:
    """Where a rented model goes: its route and its provider (the key is read when sending)."""

    route: Route
    provider: Provider


class RouteBook:
    """Routed models and their providers, kept fresh from `directory`."""

    def __init__(
        self,
        directory: Path | None,
        *,
        check_every_s: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.directory = directory
        self.check_every_s = check_every_s
        self._clock = clock
        self._checked = -check_every_s
        self._stamp: tuple[tuple[int, int], ...] = ()
        self._upstreams: dict[str, Upstream] = {}

    def lookup(self, model: str) -> Upstream | None:
        """The upstream that serves `model` (`--to`), or None when local nodes come first."""
        found = self.find(model)
        return None if found is None or found.route.overflow else found

    def overflow(self, model: str) -> Upstream | None:
        """The upstream `model` overflows to (`--overflow`), or None."""
        found = self.find(model)
        return found if found is not None and found.route.overflow else None

    def find(self, model: str) -> Upstream | None:
        """The upstream `model` is routed to, served or overflowing; None when it has none."""
        if self.directory is None:
            return None
        now = self._clock()
        if now - self._checked >= self.check_every_s:
            self._checked = now
            self._refresh(self.directory)
        return self._upstreams.get(model)

    def routed(self) -> dict[str, str]:
        """Each model only a provider serves (`--to`), and that provider."""
        self.find("")
        return {m: u.provider.name for m, u in self._upstreams.items() if not u.route.overflow}

    def key(self, upstream: Upstream) -> str:
        """The provider's key, read from its owner-only file."""
        assert self.directory is not None
        return store.key(self.directory, upstream.provider.name)

    def _refresh(self, directory: Path) -> None:
        stamp = tuple(_stamp(directory / name) for name in (store.FILE_NAME, store.ROUTES_FILE))
        if stamp == self._stamp:
            return
        try:
            providers = {p.name: p for p in store.load(directory)}
            routes = store.routes(directory)
        except ProviderError as exc:  # keep the last good routes rather than drop them all
            logger.error("providers not reloaded: %s", exc)
            return
        self._stamp = stamp
        self._upstreams = {
            r.model: Upstream(r, providers[r.provider]) for r in routes if r.provider in providers
        }
        logger.info("routes to providers: %s", ", ".join(sorted(self._upstreams)) or "none")


def _stamp(path: Path) -> tuple[int, int]:
    """The file's inode and modification time: every write is a new file (store._replace), so a
    change shows even where two writes fall within the clock's resolution."""
    try:
        st = path.stat()
    except FileNotFoundError:
        return (0, 0)
    return (st.st_ino, st.st_mtime_ns)
