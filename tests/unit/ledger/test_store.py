"""The ledger's SQL on a real file: batches, windows, profiles, and surviving a reopen."""

from __future__ import annotations

import sqlite3
from fractions import Fraction as F
from pathlib import Path

import pytest

from cluster.ledger import store
from cluster.ledger.cost import Tokens
from cluster.ledger.energy import NodeSample
from cluster.ledger.rows import Outcome, UsageRow, Values
from cluster.types import CostProfile


def row(
    i: int,
    *,
    at: float,
    node: str | None = "n1",
    model: str = "demo",
    outcome: Outcome = Outcome.OK,
    key: str | None = None,
    features: str = "",
) -> Values:
    """A request row's values with easy numbers: prompt 10*i, cached i, completion i."""
    return UsageRow(
        request_id=f"r{i}",
        at=at,
        key_id=key,
        model=model,
        node_id=node,
        endpoint="chat",
        stream=i % 2 == 0,
        prompt_tokens=10 * i,
        cached_prompt_tokens=i,
        completion_tokens=i,
        ttft_s=0.5,
        duration_s=1.0,
        outcome=outcome,
        attempts=1,
        node_ttft_s=0.05,
        features=features,
    ).values()


@pytest.fixture
def path(tmp_path: Path) -> Path:
    """Where the ledger file goes."""
    return tmp_path / store.FILE_NAME


def test_wal_mode_and_a_batch_survives_reopening(path: Path) -> None:
    conn = store.connect(path)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL: survives power loss
    assert store.insert_requests(conn, [row(i, at=1000.0 + i) for i in range(1, 6)]) == 5
    conn.close()
    again = store.connect(path)
    assert store.count(again) == 5
    got = again.execute(
        "SELECT request_id, prompt_tokens, outcome, stream, ttft_s FROM requests "
        "WHERE request_id = 'r2'"
    ).fetchone()
    assert got == ("r2", 20, "ok", 1, 0.5)


def test_a_ledger_from_before_node_ttft_gains_the_column_and_keeps_its_rows(path: Path) -> None:
    old = sqlite3.connect(str(path))
    old.executescript(store.SCHEMA.replace(",\n    node_ttft_s REAL", ""))
    assert "node_ttft_s" not in {c[1] for c in old.execute("PRAGMA table_info(requests)")}
    old.execute(
        "INSERT INTO requests (request_id, at, model, endpoint, stream, prompt_tokens, "
        "cached_prompt_tokens, completion_tokens, duration_s, outcome, attempts) "
        "VALUES ('old', 1000.0, 'demo', 'chat', 1, 5, 0, 2, 1.0, 'ok', 1)"
    )
    old.commit()
    old.close()
    conn = store.connect(path)
    assert store.insert_requests(conn, [row(1, at=1001.0)]) == 1
    got = dict(conn.execute("SELECT request_id, node_ttft_s FROM requests").fetchall())
    assert got == {"old": None, "r1": 0.05}
    [group] = store.usage(conn, None, "model")
    assert group["requests"] == 2 and group["mean_node_ttft_s"] == 0.05


def test_a_failed_commit_is_rolled_back_and_the_next_write_succeeds(path: Path) -> None:
    conn = store.connect(path)
    conn.executescript(
        "PRAGMA foreign_keys=ON; CREATE TABLE parent (id INTEGER PRIMARY KEY);"
        "CREATE TABLE child (p INTEGER REFERENCES parent DEFERRABLE INITIALLY DEFERRED);"
    )
    with pytest.raises(sqlite3.IntegrityError), store.transaction(conn):
        conn.execute("INSERT INTO child VALUES (1)")  # fails only at COMMIT
    assert not conn.in_transaction
    assert store.insert_requests(conn, [row(1, at=1.0)]) == 1
    assert store.count(store.connect(path)) == 1


def test_a_batch_sent_twice_is_recorded_once(path: Path) -> None:
    conn = store.connect(path)
    batch = [row(i, at=1000.0) for i in range(1, 4)]
    assert store.insert_requests(conn, batch) == 3
    assert store.insert_requests(conn, [*batch, row(4, at=1000.0)]) == 1
    assert store.count(conn) == 4


def test_a_crash_without_close_loses_no_committed_batch(path: Path) -> None:
    conn = store.connect(path)
    store.insert_requests(conn, [row(1, at=1.0)])
    # A second connection (another process after a crash) sees the committed rows at once.
    assert store.count(sqlite3.connect(str(path))) == 1


def test_served_tokens_per_node_and_model_in_a_window(path: Path) -> None:
    conn = store.connect(path)
    store.insert_requests(
        conn,
        [
            row(1, at=100.0),
            row(2, at=200.0),
            row(3, at=300.0, model="big"),
            row(4, at=300.0, node="n2"),
            row(5, at=300.0, node=None, outcome=Outcome.ERROR),
        ],
    )
    everything = store.served(conn, None)
    assert [(s.node_id, s.model, s.requests) for s in everything] == [
        ("n1", "big", 1),
        ("n1", "demo", 2),
        ("n2", "demo", 1),
    ]
    assert everything[1].tokens == Tokens(prompt=30, cached_prompt=3, completion=3)
    recent = store.served(conn, 150.0)
    assert [(s.node_id, s.model, s.tokens.prompt) for s in recent] == [
        ("n1", "big", 30),
        ("n1", "demo", 20),
        ("n2", "demo", 40),
    ]


def test_power_in_a_window_takes_a_straddling_chunk_pro_rata(path: Path) -> None:
    conn = store.connect(path)
    store.insert_samples(
        conn,
        [
            NodeSample(node_id="n1", t0=0.0, t1=10.0, busy_s=4.0, idle_s=6.0),
            NodeSample(node_id="n1", t0=10.0, t1=20.0, busy_s=2.0, idle_s=8.0, measured_j=500.0),
            NodeSample(node_id="n2", t0=0.0, t1=10.0, busy_s=10.0, idle_s=0.0),
        ],
    )
    ever = store.power(conn, None)
    assert ever["n1"].busy_s == 6 and ever["n1"].idle_s == 14
    assert ever["n1"].measured_s == 10 and ever["n1"].measured_j == 500
    assert ever["n1"].unmeasured_busy_s == 4 and ever["n1"].unmeasured_idle_s == 6
    half = store.power(conn, 15.0)  # half of the second chunk, none of the first
    assert set(half) == {"n1"}
    assert half["n1"].busy_s == 1 and half["n1"].measured_j == 250
    assert half["n1"].unmeasured_busy_s == F(0)


def test_nodes_keep_their_first_sighting_and_the_admin_profile_wins(path: Path) -> None:
    conn = store.connect(path)
    agent = CostProfile(price_usd=1000.0, idle_watts=5.0)
    store.node_seen(conn, "n1", "mini", agent, at=10.0)
    store.node_seen(conn, "n1", "mini-2", agent, at=20.0)
    record = store.nodes(conn)["n1"]
    assert (record.name, record.first_seen, record.last_seen) == ("mini-2", 10.0, 20.0)
    assert record.override is None and record.profile == agent
    admin = CostProfile(
        price_usd=1399.0, amortize_months=24.0, idle_watts=7.0, busy_watts=45.0, kwh_usd=0.3
    )
    store.set_override(conn, "n1", admin, at=30.0)
    conn.close()
    record = store.nodes(store.connect(path))["n1"]
    assert record.profile == admin and record.agent == agent


def test_usage_groups(path: Path) -> None:
    conn = store.connect(path)
    store.insert_requests(
        conn,
        [
            row(1, at=1.0),
            row(2, at=1.0, outcome=Outcome.CANCELLED),
            row(3, at=1.0, node="n2", outcome=Outcome.FAILED_OVER, key="k1"),
            row(4, at=1.0, node=None, outcome=Outcome.ERROR, model="nope"),
        ],
    )
    by_model = {g["model"]: g for g in store.usage(conn, None, "model")}
    assert by_model["demo"]["requests"] == 3 and by_model["demo"]["ok"] == 1
    assert by_model["demo"]["cancelled"] == 1 and by_model["demo"]["failed_over"] == 1
    assert by_model["demo"]["prompt_tokens"] == 60 and by_model["nope"]["error"] == 1
    by_node = {g["node"]: g["requests"] for g in store.usage(conn, None, "node")}
    assert by_node == {"n1": 2, "n2": 1, None: 1}
    by_key = {g["key"]: g["requests"] for g in store.usage(conn, None, "key")}
    assert by_key == {None: 3, "k1": 1}
    assert store.usage(conn, 2.0, "model") == []


def test_usage_counts_the_requests_that_used_tools_a_grammar_or_reasoning(path: Path) -> None:
    old = sqlite3.connect(str(path))  # a ledger from before the features column
    old.executescript(store.SCHEMA.replace(",\n    features TEXT NOT NULL DEFAULT ''", ""))
    old.execute(
        "INSERT INTO requests (request_id, at, model, endpoint, stream, prompt_tokens, "
        "cached_prompt_tokens, completion_tokens, duration_s, outcome, attempts) "
        "VALUES ('old', 1000.0, 'demo', 'chat', 1, 5, 0, 2, 1.0, 'ok', 1)"
    )
    old.commit()
    old.close()
    conn = store.connect(path)
    rows = [
        row(1, at=1001.0, features="constrained,tools"),
        row(2, at=1002.0, features="reasoning"),
        row(3, at=1003.0, features="constrained,reasoning,tools"),
    ]
    assert store.insert_requests(conn, rows) == 3
    [group] = store.usage(conn, None, "model")
    assert group["requests"] == 4
    assert (group["with_tools"], group["with_constrained"], group["with_reasoning"]) == (2, 2, 2)
    assert UsageRow.of(rows[0]).features == "constrained,tools"


def test_a_ledger_from_before_aliases_gains_requested_model_and_usage_names_them(
    path: Path,
) -> None:
    old = sqlite3.connect(str(path))
    before = ",\n    requested_model TEXT,\n    client TEXT\n"
    assert before in store.SCHEMA
    old.executescript(store.SCHEMA.replace(before, "\n", 1))
    old.execute(
        "INSERT INTO requests (request_id, at, model, endpoint, stream, prompt_tokens, "
        "cached_prompt_tokens, completion_tokens, duration_s, outcome, attempts) "
        "VALUES ('old', 1000.0, 'demo', 'chat', 1, 5, 0, 2, 1.0, 'ok', 1)"
    )
    old.commit()
    old.close()
    conn = store.connect(path)
    asked = [
        UsageRow.of(row(i, at=1001.0))._replace(requested_model=name).values()
        for i, name in ((1, "gpt-5-codex"), (2, "claude-haiku"), (3, "gpt-5-codex"), (4, None))
    ]
    assert store.insert_requests(conn, asked) == 4
    [group] = store.usage(conn, None, "model")  # grouped by the model served
    assert group["model"] == "demo" and group["requests"] == 5
    assert group["requested_as"] == ["claude-haiku", "gpt-5-codex"]
    got = dict(conn.execute("SELECT request_id, requested_model FROM requests"))
    assert got == {
        "old": None,
        "r1": "gpt-5-codex",
        "r2": "claude-haiku",
        "r3": "gpt-5-codex",
        "r4": None,
    }


def test_rented_requests_are_a_group_of_their_own_beside_the_owned(path: Path) -> None:
    conn = store.connect(path)
    store.insert_requests(
        conn,
        [
            row(1, at=1.0, key="k1"),
            row(2, at=1.0, key="k1", node="provider:cloud", model="gpt-4.1"),
            row(3, at=1.0, key="k1", node="provider:cloud", model="gpt-4.1"),
            row(4, at=1.0, key="k2", node="provider:cloud", model="o3"),
        ],
    )
    by_key = {(g["key"], g["provider"]): g for g in store.usage(conn, None, "key")}
    assert sorted(by_key, key=str) == [("k1", "cloud"), ("k1", None), ("k2", "cloud")]
    assert by_key["k1", "cloud"]["requests"] == 2 and by_key["k1", None]["requests"] == 1
    assert by_key["k1", "cloud"]["prompt_tokens"] == 50  # 10 x 2 + 10 x 3
    by_model = {(g["model"], g["provider"]) for g in store.usage(conn, None, "model")}
    assert by_model == {("demo", None), ("gpt-4.1", "cloud"), ("o3", "cloud")}
    spent = store.rented_served(conn, None, "key")
    assert {(k, s.node_id, s.model, s.requests, s.tokens.prompt) for k, s in spent} == {
        ("k1", "provider:cloud", "gpt-4.1", 2, 50),
        ("k2", "provider:cloud", "o3", 1, 40),
    }


def test_usage_by_client_and_a_ledger_from_before_clients_gains_the_columns(path: Path) -> None:
    old = sqlite3.connect(str(path))
    old.executescript(store.SCHEMA.replace(",\n    client TEXT\n", "\n"))
    assert "client" not in {c[1] for c in old.execute("PRAGMA table_info(requests_hourly)")}
    old.close()
    conn = store.connect(path)
    for table in ("requests", "requests_hourly"):
        assert "client" in {c[1] for c in conn.execute(f"PRAGMA table_info({table})")}
    sent = [
        UsageRow.of(row(i, at=1000.0 + i))._replace(client=client).values()
        for i, client in ((1, "codex"), (2, "claude-code"), (3, "codex"), (4, None))
    ]
    store.insert_requests(conn, sent)
    got = {g["client"]: g["requests"] for g in store.usage(conn, None, "client")}
    assert got == {"codex": 2, "claude-code": 1, None: 1}
