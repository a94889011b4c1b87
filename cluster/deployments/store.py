"""The desired state on disk: deployment specs, the last placement, cordoned nodes and model
aliases (SQLite).

It lives beside the ledger (`deployments.sqlite3` in the data dir), so a controller restart
knows what should run and where it last put it, and reloads nothing that is already there.
Calls are small and rare (admin actions, a changed placement); they run on a thread.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from pathlib import Path

from cluster.deployments.placement import DeploymentSpec
from cluster.paths import private_file
from cluster.types import ModelName, NodeId

FILE_NAME = "deployments.sqlite3"

SCHEMA = """
CREATE TABLE IF NOT EXISTS specs (
    name TEXT PRIMARY KEY,
    spec TEXT NOT NULL,
    updated_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS assignments (
    name TEXT PRIMARY KEY,
    nodes TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS cordons (
    node_id TEXT PRIMARY KEY
);
CREATE TABLE IF NOT EXISTS aliases (
    name TEXT PRIMARY KEY,
    model TEXT NOT NULL,
    updated_at REAL NOT NULL
);
"""


def spec_to_json(spec: DeploymentSpec) -> str:
    """A spec as the JSON it is stored as."""
    return json.dumps(asdict(spec), sort_keys=True)


def spec_from_json(text: str) -> DeploymentSpec:
    """A stored spec; fields a newer version added are ignored, missing ones take defaults."""
    data = json.loads(text)
    known = DeploymentSpec.__dataclass_fields__
    values = {k: v for k, v in data.items() if k in known}
    values["nodes"] = tuple(NodeId(n) for n in values.get("nodes", ()))
    return DeploymentSpec(**values)


class DeployStore:
    """Specs, assignments, cordons and aliases in one SQLite file (or in memory for `:memory:`)."""

    def __init__(self, path: Path | str) -> None:
        self.path = path
        self._conn: sqlite3.Connection | None = None
        self._lock = asyncio.Lock()

    async def open(self) -> None:
        """Open (or create) the file; a no-op once open (a controller's start tried again)."""
        if self._conn is None:
            self._conn = await asyncio.to_thread(self._connect)

    def _connect(self) -> sqlite3.Connection:
        private_file(self.path)
        conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        conn.executescript(SCHEMA)
        return conn

    async def close(self) -> None:
        """Close the file."""
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    async def load(
        self,
    ) -> tuple[list[DeploymentSpec], dict[ModelName, tuple[NodeId, ...]], set[NodeId]]:
        """Every spec, the last assignment per model, and the cordoned nodes."""
        conn = self._need()
        async with self._lock:
            specs = await asyncio.to_thread(
                lambda: [
                    spec_from_json(t)
                    for (t,) in conn.execute("SELECT spec FROM specs ORDER BY name")
                ]
            )
            rows = await asyncio.to_thread(
                lambda: conn.execute("SELECT name, nodes FROM assignments").fetchall()
            )
            cordons = await asyncio.to_thread(
                lambda: {NodeId(n) for (n,) in conn.execute("SELECT node_id FROM cordons")}
            )
        assignments = {ModelName(n): tuple(NodeId(i) for i in json.loads(v)) for n, v in rows}
        return specs, assignments, cordons

    async def put_spec(self, spec: DeploymentSpec, at: float) -> None:
        """Insert or replace a spec."""
        await self._run(
            "INSERT OR REPLACE INTO specs (name, spec, updated_at) VALUES (?, ?, ?)",
            [(spec.name, spec_to_json(spec), at)],
        )

    async def delete_spec(self, name: ModelName) -> None:
        """Forget a spec and its assignment."""
        await self._run("DELETE FROM specs WHERE name = ?", [(name,)])
        await self._run("DELETE FROM assignments WHERE name = ?", [(name,)])

    async def put_assignments(self, assignments: Mapping[ModelName, Sequence[NodeId]]) -> None:
        """Replace the stored assignment with this one."""
        conn = self._need()
        rows = [(n, json.dumps(list(v))) for n, v in sorted(assignments.items())]
        async with self._lock:
            await asyncio.to_thread(_replace_assignments, conn, rows)

    async def set_cordon(self, node_id: NodeId, cordoned: bool) -> None:
        """Remember (or forget) that a node is draining."""
        if cordoned:
            await self._run("INSERT OR IGNORE INTO cordons (node_id) VALUES (?)", [(node_id,)])
        else:
            await self._run("DELETE FROM cordons WHERE node_id = ?", [(node_id,)])

    async def aliases(self) -> dict[str, ModelName]:
        """Every alias: its name (or glob) and the model it names."""
        conn = self._need()
        async with self._lock:
            rows = await asyncio.to_thread(
                lambda: conn.execute("SELECT name, model FROM aliases ORDER BY name").fetchall()
            )
        return {name: ModelName(model) for name, model in rows}

    async def put_alias(self, name: str, model: ModelName, at: float) -> None:
        """Insert or replace an alias."""
        await self._run(
            "INSERT OR REPLACE INTO aliases (name, model, updated_at) VALUES (?, ?, ?)",
            [(name, model, at)],
        )

    async def delete_alias(self, name: str) -> None:
        """Forget an alias."""
        await self._run("DELETE FROM aliases WHERE name = ?", [(name,)])

    async def _run(self, sql: str, rows: list[tuple[object, ...]]) -> None:
        conn = self._need()
        async with self._lock:
            await asyncio.to_thread(_execute, conn, sql, rows)

    def _need(self) -> sqlite3.Connection:
        if self._conn is None:
            raise RuntimeError("the deployment store is not open")
        return self._conn


def _execute(conn: sqlite3.Connection, sql: str, rows: list[tuple[object, ...]]) -> None:
    """Run one statement per row in a transaction."""
    with conn:
        conn.execute("BEGIN")
        for row in rows:
            conn.execute(sql, row)


def _replace_assignments(conn: sqlite3.Connection, rows: list[tuple[ModelName, str]]) -> None:
    """Swap the whole assignment in one transaction: a reader never sees half of it."""
    with conn:
        conn.execute("BEGIN")
        conn.execute("DELETE FROM assignments")
        conn.executemany("INSERT INTO assignments (name, nodes) VALUES (?, ?)", rows)
