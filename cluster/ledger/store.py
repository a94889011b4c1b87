"""The usage ledger: one SQLite file in the data dir, owned by the controller. Synchronous.

Tables: `requests` (one row per request, see cluster/ledger/rows.py for what each outcome means),
`requests_hourly` (what `prune` folded requests into: their sums per hour, model, node, key and
name asked for, so that reports over pruned time stay exact to the hour),
`node_samples` (each node's busy/idle seconds and measured energy in ~10 s chunks),
`nodes` (name, first sighting and the agent's own cost profile), and `cost_overrides` (profiles
set by the admin, which win over the agent's). WAL mode with synchronous=FULL: a committed
batch survives a crash of the controller and a power loss (NORMAL could lose the commits since
the last checkpoint); readers never block the writer.

Every function takes the connection; the controller calls them on one thread of its own.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

from cluster.ledger.cost import Power, Tokens
from cluster.ledger.energy import NodeSample
from cluster.ledger.rows import RENTED_PREFIX, UsageRow, Values
from cluster.paths import private_file
from cluster.types import CostProfile

FILE_NAME = "ledger.sqlite3"

SCHEMA = """
CREATE TABLE IF NOT EXISTS requests (
    id INTEGER PRIMARY KEY,
    request_id TEXT NOT NULL UNIQUE,
    at REAL NOT NULL,
    key_id TEXT,
    model TEXT NOT NULL,
    node_id TEXT,
    endpoint TEXT NOT NULL,
    stream INTEGER NOT NULL,
    prompt_tokens INTEGER NOT NULL,
    cached_prompt_tokens INTEGER NOT NULL,
    completion_tokens INTEGER NOT NULL,
    ttft_s REAL,
    duration_s REAL NOT NULL,
    outcome TEXT NOT NULL,
    attempts INTEGER NOT NULL,
    node_ttft_s REAL,
    features TEXT NOT NULL DEFAULT '',
    requested_model TEXT,
    client TEXT
);
CREATE INDEX IF NOT EXISTS requests_at ON requests (at);
CREATE TABLE IF NOT EXISTS node_samples (
    node_id TEXT NOT NULL,
    t0 REAL NOT NULL,
    t1 REAL NOT NULL,
    busy_s REAL NOT NULL,
    idle_s REAL NOT NULL,
    measured_j REAL
);
CREATE INDEX IF NOT EXISTS node_samples_t1 ON node_samples (t1);
CREATE TABLE IF NOT EXISTS requests_hourly (
    hour REAL NOT NULL,
    model TEXT NOT NULL,
    node_id TEXT,
    key_id TEXT,
    requested_model TEXT,
    requests INTEGER NOT NULL,
    ok INTEGER NOT NULL,
    failed_over INTEGER NOT NULL,
    cancelled INTEGER NOT NULL,
    error INTEGER NOT NULL,
    prompt_tokens INTEGER NOT NULL,
    cached_prompt_tokens INTEGER NOT NULL,
    completion_tokens INTEGER NOT NULL,
    ttft_sum REAL,
    ttft_n INTEGER NOT NULL,
    node_ttft_sum REAL,
    node_ttft_n INTEGER NOT NULL,
    duration_sum REAL NOT NULL,
    with_tools INTEGER NOT NULL,
    with_constrained INTEGER NOT NULL,
    with_reasoning INTEGER NOT NULL,
    client TEXT
);
CREATE INDEX IF NOT EXISTS requests_hourly_hour ON requests_hourly (hour);
CREATE TABLE IF NOT EXISTS nodes (
    node_id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    first_seen REAL NOT NULL,
    last_seen REAL NOT NULL,
    price_usd REAL NOT NULL,
    amortize_months REAL NOT NULL,
    idle_watts REAL NOT NULL,
    busy_watts REAL NOT NULL,
    kwh_usd REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS cost_overrides (
    node_id TEXT PRIMARY KEY,
    price_usd REAL NOT NULL,
    amortize_months REAL NOT NULL,
    idle_watts REAL NOT NULL,
    busy_watts REAL NOT NULL,
    kwh_usd REAL NOT NULL,
    set_at REAL NOT NULL
);
"""

_PROFILE = ("price_usd", "amortize_months", "idle_watts", "busy_watts", "kwh_usd")
_ROW = UsageRow._fields  # the requests table's columns, in the order of a row's values
GROUPS = {"model": "model", "node": "node_id", "key": "key_id", "client": "client"}
FEATURES = ("tools", "constrained", "reasoning")  # what UsageRow.features may list
FEATURE_SUMS = ", ".join(f"SUM(instr(features, '{f}') > 0)" for f in FEATURES)
_OUTCOMES = ", ".join(f"SUM(outcome = '{o}')" for o in ("ok", "failed-over", "cancelled", "error"))
HOUR_S = 3_600.0
_FEATURE_AS = ", ".join(f"SUM(instr(features, '{f}') > 0) AS with_{f}" for f in FEATURES)
# One source's sums per group and name asked for: the raw rows since the window's start, and
# the hourly rollups of pruned ones (an hour counts in a window that starts at or before it).
# The first SELECT names the columns of the UNION.
_PROVIDER = (
    f"CASE WHEN substr(node_id, 1, {len(RENTED_PREFIX)}) = '{RENTED_PREFIX}' "
    f"THEN substr(node_id, {len(RENTED_PREFIX) + 1}) END"
)  # the provider that served a rented request; NULL for the office's own
_RAW_SUMS = (
    f"SELECT {{col}} AS g, {_PROVIDER} AS provider, requested_model AS asked, COUNT(*) AS n, "
    "SUM(outcome = 'ok') AS ok, SUM(outcome = 'failed-over') AS failed_over, "
    "SUM(outcome = 'cancelled') AS cancelled, SUM(outcome = 'error') AS error, "
    "SUM(prompt_tokens) AS prompt, SUM(cached_prompt_tokens) AS cached, "
    "SUM(completion_tokens) AS completion, SUM(ttft_s) AS ttft_sum, COUNT(ttft_s) AS ttft_n, "
    "SUM(node_ttft_s) AS node_ttft_sum, COUNT(node_ttft_s) AS node_ttft_n, "
    f"SUM(duration_s) AS duration_sum, {_FEATURE_AS} "
    "FROM requests WHERE at >= :since GROUP BY g, provider, asked"
)
_ROLLUP_SUMS = (
    f"SELECT {{col}}, {_PROVIDER}, requested_model, SUM(requests), SUM(ok), SUM(failed_over), "
    "SUM(cancelled), "
    "SUM(error), SUM(prompt_tokens), SUM(cached_prompt_tokens), SUM(completion_tokens), "
    "SUM(ttft_sum), SUM(ttft_n), SUM(node_ttft_sum), SUM(node_ttft_n), SUM(duration_sum), "
    "SUM(with_tools), SUM(with_constrained), SUM(with_reasoning) "
    f"FROM requests_hourly WHERE hour >= :since GROUP BY {{col}}, {_PROVIDER}, requested_model"
)


@dataclass(frozen=True, kw_only=True)
class NodeRecord:
    """What the ledger remembers of a node."""

    node_id: str
    name: str
    first_seen: float
    last_seen: float
    agent: CostProfile
    override: CostProfile | None = None

    @property
    def profile(self) -> CostProfile:
        """The profile in force: the admin's if set, else the agent's."""
        return self.override or self.agent


@dataclass(frozen=True, kw_only=True)
class Served:
    """Tokens one node served for one model."""

    node_id: str
    model: str
    requests: int
    tokens: Tokens


def connect(path: Path | str) -> sqlite3.Connection:
    """Open (creating it 0600 if needed) the ledger at `path` (":memory:" for a throwaway one)."""
    private_file(path)
    conn = sqlite3.connect(str(path), isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("PRAGMA busy_timeout=5000")
    conn.executescript(SCHEMA)
    _add_missing_columns(conn)
    return conn


def _add_missing_columns(conn: sqlite3.Connection) -> None:
    """Bring a ledger made by an older version up to the requests table's columns: a column
    added since is NULL (node_ttft_s, requested_model) or empty (features) in the rows written
    before it."""
    have = {row[1] for row in conn.execute("PRAGMA table_info(requests)")}
    for column, kind in (
        ("node_ttft_s", "REAL"),
        ("features", "TEXT NOT NULL DEFAULT ''"),
        ("requested_model", "TEXT"),
        ("client", "TEXT"),
    ):
        if column not in have:
            conn.execute(f"ALTER TABLE requests ADD COLUMN {column} {kind}")
    if "client" not in {row[1] for row in conn.execute("PRAGMA table_info(requests_hourly)")}:
        conn.execute("ALTER TABLE requests_hourly ADD COLUMN client TEXT")


def insert_requests(conn: sqlite3.Connection, rows: Sequence[Values]) -> int:
    """Append rows (UsageRow.values()) in one transaction, skipping request ids already
    present; returns how many were new."""
    sql = (
        f"INSERT OR IGNORE INTO requests ({', '.join(_ROW)}) VALUES ({', '.join('?' * len(_ROW))})"
    )
    before = conn.total_changes
    with transaction(conn):
        conn.executemany(sql, rows)
    return conn.total_changes - before


def absent(conn: sqlite3.Connection, rows: Sequence[Values]) -> list[Values]:
    """The rows whose request ids the ledger does not hold yet (by its unique index)."""
    have: set[str] = set()
    ids = [row[0] for row in rows]
    for i in range(0, len(ids), 500):
        chunk = ids[i : i + 500]
        marks = ", ".join("?" * len(chunk))
        query = f"SELECT request_id FROM requests WHERE request_id IN ({marks})"
        have.update(r for (r,) in conn.execute(query, chunk))
    return [row for row in rows if row[0] not in have]


def insert_samples(conn: sqlite3.Connection, samples: Sequence[NodeSample]) -> None:
    """Append node samples in one transaction."""
    with transaction(conn):
        conn.executemany(
            "INSERT INTO node_samples (node_id, t0, t1, busy_s, idle_s, measured_j) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            [(s.node_id, s.t0, s.t1, s.busy_s, s.idle_s, s.measured_j) for s in samples],
        )


def node_seen(
    conn: sqlite3.Connection, node_id: str, name: str, agent: CostProfile, at: float
) -> None:
    """Remember a node's name and its agent's cost profile; keep its first sighting."""
    values = [getattr(agent, f) for f in _PROFILE]
    with transaction(conn):
        conn.execute(
            f"INSERT INTO nodes (node_id, name, first_seen, last_seen, {', '.join(_PROFILE)}) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (node_id) DO UPDATE SET "
            "name = excluded.name, last_seen = excluded.last_seen, "
            + ", ".join(f"{f} = excluded.{f}" for f in _PROFILE),
            [node_id, name, at, at, *values],
        )


def set_override(conn: sqlite3.Connection, node_id: str, profile: CostProfile, at: float) -> None:
    """Store the admin's cost profile for a node (it wins over the agent's)."""
    with transaction(conn):
        conn.execute(
            f"INSERT OR REPLACE INTO cost_overrides (node_id, {', '.join(_PROFILE)}, set_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            [node_id, *(getattr(profile, f) for f in _PROFILE), at],
        )


def nodes(conn: sqlite3.Connection) -> dict[str, NodeRecord]:
    """Every node the ledger knows, with its overrides."""
    cols = ", ".join(f"n.{f}" for f in _PROFILE) + ", " + ", ".join(f"o.{f}" for f in _PROFILE)
    out = {}
    for row in conn.execute(
        f"SELECT n.node_id, n.name, n.first_seen, n.last_seen, {cols}, o.node_id "
        "FROM nodes n LEFT JOIN cost_overrides o USING (node_id)"
    ):
        node_id, name, first, last, *profiles, has_override = row
        agent = CostProfile(**dict(zip(_PROFILE, profiles[:5], strict=True)))
        override = (
            CostProfile(**dict(zip(_PROFILE, profiles[5:], strict=True))) if has_override else None
        )
        out[node_id] = NodeRecord(
            node_id=node_id,
            name=name,
            first_seen=first,
            last_seen=last,
            agent=agent,
            override=override,
        )
    return out


def served(conn: sqlite3.Connection, since: float | None) -> list[Served]:
    """Tokens served per (node, model) since `since` (None: ever)."""
    rows = conn.execute(
        "SELECT node_id, model, SUM(n), SUM(prompt), SUM(cached), SUM(completion) FROM ("
        "SELECT node_id, model, COUNT(*) AS n, SUM(prompt_tokens) AS prompt, "
        "SUM(cached_prompt_tokens) AS cached, SUM(completion_tokens) AS completion "
        "FROM requests WHERE node_id IS NOT NULL AND at >= :since GROUP BY node_id, model "
        "UNION ALL SELECT node_id, model, SUM(requests), SUM(prompt_tokens), "
        "SUM(cached_prompt_tokens), SUM(completion_tokens) FROM requests_hourly "
        "WHERE node_id IS NOT NULL AND hour >= :since GROUP BY node_id, model"
        ") GROUP BY node_id, model ORDER BY node_id, model",
        {"since": _since(since)},
    )
    return [
        Served(
            node_id=n, model=m, requests=c, tokens=Tokens(prompt=p, cached_prompt=cp, completion=o)
        )
        for n, m, c, p, cp, o in rows
    ]


def power(conn: sqlite3.Connection, since: float | None) -> dict[str, Power]:
    """Each node's busy/idle seconds and energy since `since`; a straddling chunk pro rata."""
    part = "MIN(1.0, (t1 - :since) / MAX(t1 - t0, 1e-9))"
    rows = conn.execute(
        f"SELECT node_id, SUM(busy_s * {part}), SUM(idle_s * {part}), "
        f"SUM(CASE WHEN measured_j IS NOT NULL THEN (busy_s + idle_s) * {part} END), "
        f"SUM(measured_j * {part}), "
        f"SUM(CASE WHEN measured_j IS NULL THEN busy_s * {part} END), "
        f"SUM(CASE WHEN measured_j IS NULL THEN idle_s * {part} END) "
        "FROM node_samples WHERE t1 > :since GROUP BY node_id",
        {"since": _since(since)},
    )
    return {
        node_id: Power(
            busy_s=_q(b),
            idle_s=_q(i),
            measured_s=_q(ms),
            measured_j=_q(mj),
            unmeasured_busy_s=_q(ub),
            unmeasured_idle_s=_q(ui),
        )
        for node_id, b, i, ms, mj, ub, ui in rows
    }


def usage(conn: sqlite3.Connection, since: float | None, by: str) -> list[dict[str, Any]]:
    """Requests, outcomes, tokens and mean latencies per model, node or key since `since`, and
    the other names (aliases) clients asked for them by (`requested_as`); a group's requests
    a provider served are a group of their own beside it (`provider`: its name, else None)."""
    col = GROUPS[by]
    sources = " UNION ALL ".join(q.format(col=col) for q in (_RAW_SUMS, _ROLLUP_SUMS))
    rows = conn.execute(
        "SELECT g, provider, SUM(n), SUM(ok), SUM(failed_over), SUM(cancelled), SUM(error), "
        "SUM(prompt), SUM(cached), SUM(completion), SUM(ttft_sum) / SUM(ttft_n), "
        "SUM(node_ttft_sum) / SUM(node_ttft_n), SUM(duration_sum) / SUM(n), "
        + ", ".join(f"SUM(with_{f})" for f in FEATURES)
        + f", GROUP_CONCAT(DISTINCT asked) FROM ({sources}) GROUP BY g, provider "
        "ORDER BY SUM(n) DESC, g, provider",
        {"since": _since(since)},
    )
    names = (
        "requests",
        "ok",
        "failed_over",
        "cancelled",
        "error",
        "prompt_tokens",
        "cached_prompt_tokens",
        "completion_tokens",
        "mean_ttft_s",
        "mean_node_ttft_s",
        "mean_duration_s",
        *(f"with_{f}" for f in FEATURES),
    )
    return [
        {
            by: group,
            "provider": provider,
            **dict(zip(names, values, strict=True)),
            "requested_as": _names(asked),
        }
        for group, provider, *values, asked in rows
    ]


def rented_served(
    conn: sqlite3.Connection, since: float | None, by: str
) -> list[tuple[str | None, Served]]:
    """Tokens providers served since `since`, per model, node or key (`by`; the pair's first),
    and per provider and model served: what their spend is priced from."""
    col = GROUPS[by]
    rented = f"substr(node_id, 1, {len(RENTED_PREFIX)}) = '{RENTED_PREFIX}'"
    rows = conn.execute(
        "SELECT g, node_id, model, SUM(n), SUM(prompt), SUM(cached), SUM(completion) FROM ("
        f"SELECT {col} AS g, node_id, model, COUNT(*) AS n, SUM(prompt_tokens) AS prompt, "
        "SUM(cached_prompt_tokens) AS cached, SUM(completion_tokens) AS completion "
        f"FROM requests WHERE {rented} AND at >= :since GROUP BY g, node_id, model "
        f"UNION ALL SELECT {col}, node_id, model, SUM(requests), SUM(prompt_tokens), "
        "SUM(cached_prompt_tokens), SUM(completion_tokens) FROM requests_hourly "
        f"WHERE {rented} AND hour >= :since GROUP BY {col}, node_id, model"
        ") GROUP BY g, node_id, model",
        {"since": _since(since)},
    )
    return [
        (
            g,
            Served(
                node_id=n,
                model=m,
                requests=c,
                tokens=Tokens(prompt=p, cached_prompt=cp, completion=o),
            ),
        )
        for g, n, m, c, p, cp, o in rows
    ]


def count(conn: sqlite3.Connection) -> int:
    """How many requests the ledger holds."""
    return int(conn.execute("SELECT COUNT(*) FROM requests").fetchone()[0])


@contextlib.contextmanager
def transaction(conn: sqlite3.Connection) -> Iterator[None]:
    """BEGIN ... COMMIT, or ROLLBACK on any error, the COMMIT's own included (the connection
    is in autocommit mode). SQLite may leave a transaction open after a failed COMMIT (a full
    disk, an I/O error); left open, it would make every later BEGIN fail until a restart."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


def _names(concatenated: str | None) -> list[str]:
    """GROUP_CONCAT's names as a sorted list (model names hold no commas)."""
    return sorted(concatenated.split(",")) if concatenated else []


def _since(since: float | None) -> float:
    return float("-inf") if since is None else since


def _q(value: float | None) -> Fraction:
    return Fraction(value or 0.0)
