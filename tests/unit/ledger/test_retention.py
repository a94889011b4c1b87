"""Pruning folds old rows into hourly sums: cost and usage say the same before and after."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from cluster.ledger import prices, reports, retention, store
from cluster.ledger.energy import NodeSample
from cluster.ledger.rows import Outcome, UsageRow, Values
from cluster.types import CostProfile

HOUR = 3_600.0
T0 = 1_767_225_600.0  # 2026-01-01T00:00:00Z
PROFILE = CostProfile(
    price_usd=1440.0, amortize_months=36.0, idle_watts=10.0, busy_watts=50.0, kwh_usd=0.25
)


def row(i: int, at: float) -> Values:
    """A row whose fields vary with i: node, model, key, outcome, latencies, features, alias."""
    return UsageRow(
        request_id=f"r{i}",
        at=at,
        key_id=("k1", "k2", None)[i % 3],
        model=("demo", "big")[i % 2],
        node_id=("n1", "n2", None)[i % 3],
        endpoint="chat",
        stream=i % 2 == 0,
        prompt_tokens=100 + i,
        cached_prompt_tokens=i,
        completion_tokens=10 + i,
        ttft_s=None if i % 5 == 0 else 0.1 * i,
        duration_s=0.5 + i,
        outcome=list(Outcome)[i % 4],
        attempts=1,
        node_ttft_s=None if i % 4 == 0 else 0.01 * i,
        features=("", "tools", "constrained,tools", "reasoning")[i % 4],
        requested_model="gpt-5-codex" if i % 7 == 0 else None,
        client=("codex", None, "openai-python")[i % 3 % 2 + i % 5 % 2],
    ).values()


@pytest.fixture
def ledger(tmp_path: Path) -> Any:
    """Ten hours of requests (six an hour) and node samples (measured on n1 only)."""
    conn = store.connect(tmp_path / store.FILE_NAME)
    store.insert_requests(conn, [row(i, T0 + i * 600.0 + 1) for i in range(60)])
    for node, measured in (("n1", True), ("n2", False)):
        store.node_seen(conn, node, node, PROFILE, T0)
        store.insert_samples(
            conn,
            [
                NodeSample(
                    node_id=node,
                    t0=T0 + k * 10.0,
                    t1=T0 + (k + 1) * 10.0,
                    busy_s=(k % 7) / 3,
                    idle_s=10.0 - (k % 7) / 3,
                    measured_j=(30.0 + k % 5) * 10.0 if measured else None,
                )
                for k in range(3_600)
            ],
        )
    return conn


def figures(conn: Any, since: float | None) -> dict[str, Any]:
    """Everything the reports read for a window: cost, and usage by model, node and key."""
    now = T0 + 10 * HOUR
    window = reports.Snapshot(served=store.served(conn, since), power=store.power(conn, since))
    ever = reports.Snapshot(served=store.served(conn, None), power=store.power(conn, None))
    inputs = reports.CostInputs(
        label="w",
        since=since,
        now=now,
        nodes=store.nodes(conn),
        window=window,
        ever=ever,
        prices=prices.load(None),
    )
    usage = {by: store.usage(conn, since, by) for by in store.GROUPS}
    return {"cost": reports.cost_report(inputs), "usage": usage, "served": window.served}


@pytest.mark.parametrize("since", [None, T0, T0 + 2 * HOUR, T0 + 6 * HOUR])
def test_cost_and_usage_are_the_same_after_a_prune(ledger: Any, since: float | None) -> None:
    before = figures(ledger, since)
    done = retention.prune(ledger, T0 + 5 * HOUR + 1_234.0)  # whole hours only: up to 5 h
    assert done["before"] == T0 + 5 * HOUR and done["requests"] == 30
    assert done["samples"] > 3_000
    assert store.count(ledger) == 30
    after = figures(ledger, since)
    assert after["served"] == before["served"]  # tokens and request counts: exact
    assert rounded(after) == rounded(before)


def test_a_second_prune_and_later_rows_still_add_up(ledger: Any) -> None:
    before = figures(ledger, None)
    retention.prune(ledger, T0 + 3 * HOUR)
    retention.prune(ledger, T0 + 3 * HOUR)  # nothing more to fold
    retention.prune(ledger, T0 + 8 * HOUR)
    assert rounded(figures(ledger, None)) == rounded(before)
    store.insert_requests(ledger, [row(60, T0 + HOUR)])  # a late row in a pruned hour
    served = {(s.node_id, s.model): s.requests for s in store.served(ledger, None)}
    was = {(s.node_id, s.model): s.requests for s in before["served"]}
    assert served == {**was, ("n1", "demo"): was["n1", "demo"] + 1}


def rounded(value: Any) -> Any:
    """`value` with every float rounded to 9 significant digits: the sums of floats the folded
    hours hold may differ from the raw rows' in the last bits."""
    if isinstance(value, float):
        return float(f"{value:.9g}")
    if isinstance(value, dict):
        return {k: rounded(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [rounded(v) for v in value]
    return value
