"""The dashboard's ledger queries: sums per time bucket, each bounded by its span.

Each reads only the rows of its span (the `at`, `hour` and `t1` indexes) and returns them
grouped in SQL, so a series costs the ledger one indexed range scan, never the whole file.
Pruned hours come from the hourly rollups. The shaping is ledger/series.py's.
"""

from __future__ import annotations

import sqlite3
from fractions import Fraction
from typing import Any

from cluster.ledger.cost import Power, Tokens
from cluster.ledger.series import Span
from cluster.ledger.store import GROUPS

RECENT_LIMIT = 20_000  # rows for the live totals; a busier cluster is sampled by its newest


def traffic(conn: sqlite3.Connection, span: Span, by: str) -> list[tuple[Any, ...]]:
    """(bucket, group, requests, prompt, completion, ttft sum, ttft count, *outcomes) rows."""
    col = "outcome" if by == "outcome" else GROUPS[by]
    hourly_col = "'(hourly)'" if by == "outcome" else col
    b = "CAST(at / :step AS INTEGER) * :step"
    hb = "CAST(hour / :step AS INTEGER) * :step"
    return conn.execute(
        f"SELECT {b}, {col}, COUNT(*), SUM(prompt_tokens), SUM(completion_tokens), "
        "SUM(ttft_s), COUNT(ttft_s), SUM(outcome = 'ok'), SUM(outcome = 'failed-over'), "
        "SUM(outcome = 'cancelled'), SUM(outcome = 'error') FROM requests "
        f"WHERE at >= :start AND at < :end GROUP BY 1, 2 UNION ALL SELECT {hb}, {hourly_col}, "
        "SUM(requests), SUM(prompt_tokens), SUM(completion_tokens), SUM(ttft_sum), "
        "SUM(ttft_n), SUM(ok), SUM(failed_over), SUM(cancelled), SUM(error) FROM requests_hourly "
        "WHERE hour >= :start AND hour < :end GROUP BY 1, 2",
        _span(span),
    ).fetchall()


def recent(conn: sqlite3.Connection, since: float) -> list[tuple[Any, ...]]:
    """(completion tokens, ttft_s, outcome) of each request since `since`, newest first."""
    return conn.execute(
        "SELECT completion_tokens, ttft_s, outcome FROM requests WHERE at >= ? "
        "ORDER BY at DESC LIMIT ?",
        (since, RECENT_LIMIT),
    ).fetchall()


def served(conn: sqlite3.Connection, span: Span) -> list[tuple[int, str, str, Tokens]]:
    """Tokens per (bucket, node, model) over the span (requests no node served left out)."""
    rows = conn.execute(
        "SELECT b, node_id, model, SUM(p), SUM(c), SUM(o) FROM ("
        "SELECT CAST(at / :step AS INTEGER) * :step AS b, node_id, model, "
        "SUM(prompt_tokens) AS p, SUM(cached_prompt_tokens) AS c, SUM(completion_tokens) AS o "
        "FROM requests WHERE node_id IS NOT NULL AND at >= :start AND at < :end GROUP BY 1, 2, 3 "
        "UNION ALL SELECT CAST(hour / :step AS INTEGER) * :step, node_id, model, "
        "SUM(prompt_tokens), SUM(cached_prompt_tokens), SUM(completion_tokens) "
        "FROM requests_hourly WHERE node_id IS NOT NULL AND hour >= :start AND hour < :end "
        "GROUP BY 1, 2, 3) GROUP BY 1, 2, 3",
        _span(span),
    )
    return [
        (int(b), n, m, Tokens(prompt=p, cached_prompt=c, completion=o)) for b, n, m, p, c, o in rows
    ]


def power(conn: sqlite3.Connection, span: Span) -> dict[tuple[int, str], Power]:
    """Busy and idle seconds and energy per (bucket, node); a chunk counts in its end's bucket."""
    rows = conn.execute(
        "SELECT CAST(t1 / :step AS INTEGER) * :step, node_id, SUM(busy_s), SUM(idle_s), "
        "SUM(CASE WHEN measured_j IS NOT NULL THEN busy_s + idle_s END), SUM(measured_j), "
        "SUM(CASE WHEN measured_j IS NULL THEN busy_s END), "
        "SUM(CASE WHEN measured_j IS NULL THEN idle_s END) "
        "FROM node_samples WHERE t1 >= :start AND t1 < :end GROUP BY 1, 2",
        _span(span),
    )
    return {
        (int(b), node_id): Power(
            busy_s=_q(busy),
            idle_s=_q(idle),
            measured_s=_q(ms),
            measured_j=_q(mj),
            unmeasured_busy_s=_q(ub),
            unmeasured_idle_s=_q(ui),
        )
        for b, node_id, busy, idle, ms, mj, ub, ui in rows
    }


def _span(span: Span) -> dict[str, float]:
    return {"start": span.start, "end": span.end, "step": span.step}


def _q(value: float | None) -> Fraction:
    return Fraction(value or 0)
