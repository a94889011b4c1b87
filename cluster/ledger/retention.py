"""Retention: `cluster ledger prune --before DATE` folds old rows into hourly sums, deletes them.

The ledger keeps a row per request and a sample per node every ~10 s, for ever, unless pruned.
Pruned requests live on in `requests_hourly` (store.py reads it beside the raw rows), pruned
samples as one per node and hour in `node_samples` itself, so `cluster cost` and `cluster usage`
say the same of a pruned period as before.
"""

from __future__ import annotations

import sqlite3

from cluster.ledger import store

# What `prune` folds one hour of requests into (the columns of requests_hourly, in order).
_FOLD = (
    "SELECT CAST(at / 3600 AS INTEGER) * 3600.0, model, node_id, key_id, requested_model, "
    "COUNT(*), SUM(outcome = 'ok'), SUM(outcome = 'failed-over'), SUM(outcome = 'cancelled'), "
    "SUM(outcome = 'error'), SUM(prompt_tokens), SUM(cached_prompt_tokens), "
    "SUM(completion_tokens), SUM(ttft_s), COUNT(ttft_s), SUM(node_ttft_s), "
    f"COUNT(node_ttft_s), SUM(duration_s), {store.FEATURE_SUMS}, client FROM requests "
    "WHERE at < ? GROUP BY 1, model, node_id, key_id, requested_model, client"
)


def prune(conn: sqlite3.Connection, before: float) -> dict[str, int]:
    """Fold the requests and node samples of the whole hours before `before` into hourly sums,
    and delete them, in one transaction: the ledger stops growing without end, and cost and
    usage over the pruned time stay what they were (to the hour: a window that starts inside a
    pruned hour counts that hour whole, or not at all). Returns what it removed and kept."""
    cut = (before // store.HOUR_S) * store.HOUR_S
    with store.transaction(conn):
        hours = conn.execute(f"INSERT INTO requests_hourly {_FOLD}", [cut]).rowcount
        requests = conn.execute("DELETE FROM requests WHERE at < ?", [cut]).rowcount
        samples = _fold_samples(conn, cut)
    return {"before": int(cut), "requests": requests, "request_hours": hours, "samples": samples}


def _fold_samples(conn: sqlite3.Connection, cut: float) -> int:
    """Node samples that ended before `cut`, one per node, hour they began in and whether power
    was measured (the cost model prices measured and configured seconds apart); returns how
    many fewer there are."""
    folded = conn.execute(
        "SELECT node_id, MIN(t0), MAX(t1), SUM(busy_s), SUM(idle_s), SUM(measured_j) "
        "FROM node_samples WHERE t1 <= ? "
        "GROUP BY node_id, CAST(t0 / 3600 AS INTEGER), measured_j IS NULL",
        [cut],
    ).fetchall()
    removed = conn.execute("DELETE FROM node_samples WHERE t1 <= ?", [cut]).rowcount
    conn.executemany(
        "INSERT INTO node_samples (node_id, t0, t1, busy_s, idle_s, measured_j) "
        "VALUES (?, ?, ?, ?, ?, ?)",
        folded,
    )
    return int(removed - len(folded))
