"""The API keys on disk and in the controller: `keys.sqlite3` beside the ledger, owner-only.

The controller owns the file, as it owns the ledger. It keeps every key (hash only) in a
versioned KeyTable in memory; gateways long-poll for a newer version the way they follow the
node table, so a key made or revoked here reaches every gateway within one round trip.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
import sqlite3
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from cluster.access.keys import (
    ID_HEX,
    NAME,
    SECRET_HEX,
    KeyRecord,
    KeyTable,
    digest,
    format_key,
    new_key,
)
from cluster.errors import InvalidRequest, NotFound
from cluster.paths import private_file

logger = logging.getLogger(__name__)

FILE_NAME = "keys.sqlite3"
SCHEMA = """
CREATE TABLE IF NOT EXISTS api_keys (
    key_id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    digest TEXT NOT NULL,
    models TEXT NOT NULL,
    max_concurrent INTEGER,
    created_at REAL NOT NULL,
    revoked_at REAL,
    local_only INTEGER NOT NULL DEFAULT 0
);
CREATE UNIQUE INDEX IF NOT EXISTS api_keys_live_name ON api_keys (name) WHERE revoked_at IS NULL;
"""
_COLS = "key_id, name, digest, models, max_concurrent, created_at, revoked_at, local_only"


def connect(path: Path | str) -> sqlite3.Connection:
    """Open (creating it 0600 if needed) the keys file; ":memory:" for a throwaway one."""
    private_file(path)
    conn = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA busy_timeout=5000")
    conn.executescript(SCHEMA)
    if "local_only" not in {row[1] for row in conn.execute("PRAGMA table_info(api_keys)")}:
        # a file made before local-only keys: its keys may use providers, as they could
        conn.execute("ALTER TABLE api_keys ADD COLUMN local_only INTEGER NOT NULL DEFAULT 0")
    return conn


def load(conn: sqlite3.Connection) -> list[KeyRecord]:
    """Every key, revoked ones included."""
    return [
        KeyRecord(
            key_id=k,
            name=n,
            digest=d,
            models=tuple(filter(None, m.split(","))),
            max_concurrent=c,
            created_at=at,
            revoked_at=rev,
            local_only=bool(local),
        )
        for k, n, d, m, c, at, rev, local in conn.execute(f"SELECT {_COLS} FROM api_keys")
    ]


def insert(conn: sqlite3.Connection, r: KeyRecord) -> None:
    """Store a new key; InvalidRequest when a live key already has its name."""
    try:
        conn.execute(
            f"INSERT INTO api_keys ({_COLS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            [
                r.key_id,
                r.name,
                r.digest,
                ",".join(r.models),
                r.max_concurrent,
                r.created_at,
                r.revoked_at,
                int(r.local_only),
            ],
        )
    except sqlite3.IntegrityError:
        raise InvalidRequest(
            f"a key named {r.name!r} exists already; revoke it first", param="name"
        ) from None


def revoke(conn: sqlite3.Connection, name: str, at: float) -> None:
    """Mark the live key called `name` revoked; NotFound if there is none."""
    if not conn.execute(
        "UPDATE api_keys SET revoked_at = ? WHERE name = ? AND revoked_at IS NULL", [at, name]
    ).rowcount:
        raise NotFound(f"no live key named {name!r}", param="name")


def parse_key_request(body: bytes) -> tuple[str, tuple[str, ...], int | None, bool]:
    """(name, models, max_concurrent, local_only) of the admin's `keys create` JSON body; 400
    otherwise."""
    try:
        fields = json.loads(body or b"{}")
    except ValueError:
        raise InvalidRequest("the body is not JSON") from None
    if not isinstance(fields, dict):
        raise InvalidRequest("the body must be a JSON object")
    local_only = fields.get("local_only", False)
    if not isinstance(local_only, bool):
        raise InvalidRequest("local_only: true or false", param="local_only")
    name, models, limit = check_request(
        fields.get("name"), fields.get("models", []), fields.get("max_concurrent")
    )
    return name, models, limit, local_only


def check_request(
    name: object, models: object, max_concurrent: object
) -> tuple[str, tuple[str, ...], int | None]:
    """The fields of a `keys create`, validated; InvalidRequest naming the field otherwise."""
    if not isinstance(name, str) or not NAME.match(name):
        raise InvalidRequest("name: 1-64 letters, digits, '.', '_' or '-'", param="name")
    if not isinstance(models, list) or not all(
        isinstance(m, str) and m and "," not in m for m in models
    ):
        raise InvalidRequest("models: a list of model names", param="models")
    if max_concurrent is not None and (type(max_concurrent) is not int or max_concurrent < 1):
        raise InvalidRequest("max_concurrent: a whole number of at least 1", param="max_concurrent")
    return name, tuple(dict.fromkeys(models)), max_concurrent


class KeyRegistry:
    """The controller's keys: the file, and the versioned table the gateways follow."""

    def __init__(
        self,
        path: Path | str,
        *,
        clock: Callable[[], float] = time.time,
        random_hex: Callable[[], str] = lambda: secrets.token_hex((ID_HEX + SECRET_HEX) // 2),
    ) -> None:
        self.path = path
        self._clock = clock
        self._random_hex = random_hex
        self._conn: sqlite3.Connection | None = None
        self._lock = asyncio.Lock()
        self._changed = asyncio.Event()
        # Versions start from the clock so that a restarted controller never repeats one.
        self._table = KeyTable(int(clock() * 1000))

    async def open(self) -> None:
        """Open the file and load every key."""
        self._conn = await asyncio.to_thread(connect, self.path)
        self._publish(await asyncio.to_thread(load, self._conn))
        logger.info("API keys at %s (%d live)", self.path, self._table.active)

    def table(self) -> KeyTable:
        """The current key table."""
        return self._table

    async def wait_table(self, known_version: int, timeout_s: float = 20.0) -> KeyTable:
        """Long poll: return as soon as the table's version differs from `known_version`."""
        deadline = time.monotonic() + timeout_s
        while self._table.version == known_version and time.monotonic() < deadline:
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), deadline - time.monotonic())
        return self._table

    async def create(
        self,
        name: str,
        models: Sequence[str],
        max_concurrent: int | None,
        local_only: bool = False,
    ) -> tuple[KeyRecord, str]:
        """Make and store a key; returns it and the full key (the only time it is known)."""
        key_id, secret = new_key(self._random_hex())
        record = KeyRecord(
            key_id=key_id,
            name=name,
            digest=digest(secret),
            models=tuple(models),
            max_concurrent=max_concurrent,
            local_only=local_only,
            created_at=self._clock(),
        )
        await self._change(insert, record)
        logger.info("API key %s (%s) created", key_id, name)
        return record, format_key(key_id, secret)

    async def revoke(self, name: str) -> KeyRecord:
        """Revoke the live key called `name`; the gateways stop accepting it at once."""
        await self._change(revoke, name, self._clock())
        record = max(
            (r for r in self._table.keys.values() if r.name == name),
            key=lambda r: r.revoked_at or 0.0,
        )
        logger.info("API key %s (%s) revoked", record.key_id, name)
        return record

    async def close(self) -> None:
        """Close the file."""
        if self._conn is not None:
            await asyncio.to_thread(self._conn.close)
            self._conn = None

    async def _change(self, fn: Callable[..., None], *args: object) -> None:
        async with self._lock:
            conn = self._conn
            if conn is None:
                raise RuntimeError("the key store is not open")
            await asyncio.to_thread(fn, conn, *args)
            self._publish(await asyncio.to_thread(load, conn))

    def _publish(self, records: list[KeyRecord]) -> None:
        self._table = KeyTable.of(self._table.version + 1, records)
        self._changed.set()
