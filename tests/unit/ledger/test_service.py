"""The ledger service without Ray: rows in, energy in, reports out, a clean shutdown."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from cluster.gateway.recorder import Recorder
from cluster.ledger import prices, store
from cluster.ledger.metrics import render
from cluster.ledger.reports import Window
from cluster.ledger.rows import Outcome, UsageBatch, UsageRow, Values
from cluster.ledger.service import LedgerService
from cluster.node_client import NodeDescription, NodeStatusSample
from cluster.types import CostProfile, NodeTable
from tests.unit.ledger.test_retention import rounded

DAY = 86_400.0
T0 = 1_767_225_600.0  # 2026-01-01T00:00:00Z
PROFILE = CostProfile(
    price_usd=1440.0, amortize_months=36.0, idle_watts=10.0, busy_watts=50.0, kwh_usd=0.25
)


class Clock:
    """Wall-clock time that the test moves."""

    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


Service = tuple[LedgerService, Clock]  # the fixture: an open service and its clock


def describe(node_id: str, cost: CostProfile = PROFILE) -> NodeDescription:
    """A Describe answer for a node named after its id."""
    return NodeDescription(
        node_id=node_id,
        name=f"name-{node_id}",
        agent_version="1",
        protocol_version="1",
        engines=("mlx",),
        accelerator_kind="cpu",
        accelerator_name="cpu",
        memory_total_bytes=1,
        memory_available_bytes=1,
        cost=cost,
        models=(),
    )


def status(node_id: str, busy: float, watts: float | None = None) -> NodeStatusSample:
    """A status message with the node's busy-seconds counter."""
    return NodeStatusSample(
        node_id=node_id,
        unix_ms=0,
        models=(),
        memory_used_bytes=0,
        memory_available_bytes=0,
        power_watts=watts,
        busy_seconds=busy,
    )


def usage_row(i: int, at: float, node: str = "n1") -> UsageRow:
    """1 M prompt tokens (200 k cached) and 200 k completion tokens."""
    return UsageRow(
        request_id=f"r{i}",
        at=at,
        key_id=None,
        model="demo",
        node_id=node,
        endpoint="chat",
        stream=False,
        prompt_tokens=1_000_000,
        cached_prompt_tokens=200_000,
        completion_tokens=200_000,
        duration_s=1.0,
        outcome=Outcome.OK,
        attempts=1,
    )


def row(i: int, at: float, node: str = "n1") -> Values:
    """That row's values, as a gateway's batch carries them."""
    return usage_row(i, at, node).values()


@pytest.fixture
async def service(tmp_path: Path) -> AsyncIterator[tuple[LedgerService, Clock]]:
    """Open the ledger service on a file, with a clock the test moves."""
    clock = Clock()
    b = LedgerService(
        path=tmp_path / store.FILE_NAME,
        prices=prices.load(None),
        clock=clock,
        chunk_s=3_600.0,
        max_gap_s=3_601.0,
    )
    await b.open()
    yield b, clock
    await b.close()


async def test_a_day_of_one_node_gives_the_cost_model_figures(
    service: tuple[LedgerService, Clock],
) -> None:
    b, clock = service
    b.node_described(describe("n1"))
    for hour in range(25):  # busy 6 h of every 24: a quarter of each hour
        clock.now = T0 + hour * 3_600
        b.status(status("n1", busy=hour * 900.0), "addr")
    b.stream_ended("n1", "addr")
    await b.record(
        UsageBatch(replica="g", rows=(row(1, T0 + 10),), inflight=0, pending=0, closing=False)
    )
    report = await b.cost(Window.parse("all"))
    n = report["nodes"][0]
    assert (n["name"], n["profile_source"], n["requests"]) == ("name-n1", "agent", 1)
    assert n["tokens"] == {
        "prompt": 1_000_000,
        "cached_prompt": 200_000,
        "completion": 200_000,
        "total": 1_200_000,
    }
    assert n["busy_ratio"] == 0.25 and n["owned_s"] == DAY
    assert n["energy"] == {"kwh": pytest.approx(0.48), "source": "configured"}
    assert n["cost_usd"]["hardware"] == pytest.approx(5760 / 4383)
    assert n["cost_usd"]["energy"] == pytest.approx(0.12)
    assert n["marginal_usd_per_mtok"] == pytest.approx(0.1)
    gpt_4o_mini = 0.15 * 0.8 + 0.075 * 0.2 + 0.60 * 0.2  # the default reference, per Mtok
    assert n["cloud_equivalent_usd"] == pytest.approx(gpt_4o_mini)
    assert report["total"]["tokens"] == n["tokens"]
    assert report["prices"]["references"] == {"demo": "gpt-4o-mini"}


async def test_the_window_limits_tokens_and_the_breakeven_uses_all_time(
    service: tuple[LedgerService, Clock],
) -> None:
    b, clock = service
    b.node_described(describe("n1"))
    clock.now = T0 + 2 * DAY
    await b.record(
        UsageBatch(
            replica="g",
            rows=(row(1, T0 + 1), row(2, T0 + 1.5 * DAY)),
            inflight=0,
            pending=0,
            closing=False,
        )
    )
    day = await b.cost(Window.parse("24h"))
    assert day["nodes"][0]["requests"] == 1 and day["nodes"][0]["owned_s"] == DAY
    assert day["nodes"][0]["recovered_usd"] == pytest.approx(2 * 0.255)
    assert day["nodes"][0]["breakeven"] is not None and not day["nodes"][0]["paid_off"]


async def test_the_admin_profile_wins_and_is_kept(
    tmp_path: Path, service: tuple[LedgerService, Clock]
) -> None:
    b, _ = service
    b.node_described(describe("n1"))
    out = await b.set_cost("n1", {"price_usd": 0.0, "kwh_usd": 0.5})
    assert out["profile"]["price_usd"] == 0 and out["profile"]["idle_watts"] == 10
    b.node_described(describe("n1"))  # the agent says its own again: the admin's still wins
    report = await b.cost(Window.parse("all"))
    assert report["nodes"][0]["profile_source"] == "admin"
    assert report["nodes"][0]["profile"]["kwh_usd"] == 0.5 and report["nodes"][0]["paid_off"]


async def test_measured_power_is_used_and_said(service: Service) -> None:
    b, clock = service
    b.node_described(describe("n1"))
    for s in range(4):
        clock.now = T0 + s
        b.status(status("n1", busy=0.0, watts=36.0), "addr")
    b.status(status("n1", busy=0.0, watts=99.0), "other")  # a second stream is not counted
    await b.close()
    conn = store.connect(b.path)
    assert store.power(conn, None)["n1"].measured_j == 3 * 36
    conn.close()


async def test_a_clean_shutdown_waits_for_the_gateways_rows(
    service: tuple[LedgerService, Clock],
) -> None:
    b, _ = service
    rec = Recorder(b.record, replica="g1", interval_s=0.02)
    task = asyncio.get_running_loop().create_task(rec.run())
    try:
        await asyncio.sleep(0.05)  # the gateway has been heard from
        rec.begin()  # a request in flight when the shutdown starts
        shutdown = asyncio.get_running_loop().create_task(b.prepare_shutdown(5.0))
        await asyncio.sleep(0.1)
        assert not shutdown.done() and rec.closing
        rec.end(row(1, T0))
        done = await shutdown
    finally:
        task.cancel()
    assert done == {"complete": True, "waiting_for": [], "requests": 1}


async def test_a_silent_gateway_is_not_waited_for(service: Service) -> None:
    b, _ = service
    done = await b.prepare_shutdown(0.2)
    assert done["complete"] and done["requests"] == 0


async def test_request_metrics_count_each_committed_row_once(
    service: tuple[LedgerService, Clock],
) -> None:
    b, _ = service

    def batch(*ids: int) -> UsageBatch:
        rows = tuple(row(i, T0 + i) for i in ids)
        return UsageBatch(replica="g", rows=rows, inflight=0, pending=0, closing=False)

    await b.record(batch(1, 2))
    await b.record(batch(1, 2, 3))  # the answer to the first send was lost: sent again, and more
    await b.record(batch(4))
    snapshot = await b.metrics()
    text = render(snapshot, NodeTable()).decode()
    assert 'meterless:requests_total{model="demo",node="n1",outcome="ok"} 4.0' in text
    assert 'meterless:generation_tokens_total{model="demo",node="n1"} 800000.0' in text
    assert await b._db(store.count) == 4


async def test_a_models_price_weighs_each_nodes_rate_by_the_tokens_it_served(
    service: tuple[LedgerService, Clock],
) -> None:
    b, clock = service
    b.node_described(describe("n1"))
    b.node_described(describe("n2", CostProfile(price_usd=0.0, kwh_usd=0.0)))  # costs nothing
    clock.now = T0 + DAY
    rows = (row(1, T0 + 10, "n1"), row(2, T0 + 20, "n2"), row(3, T0 + 30, "n2"))
    await b.record(UsageBatch(replica="g", rows=rows, inflight=0, pending=0, closing=False))
    report = await b.cost(Window.parse("all"))
    n1 = next(n for n in report["nodes"] if n["node_id"] == "n1")
    prices = await b.model_prices(Window.parse("all"))
    # n1 served a third of demo's tokens, at its own rate; n2's are free.
    assert prices == {"demo": pytest.approx(n1["usd_per_mtok"] / 3)}
    assert await b.model_prices(Window.parse("1m")) == {}  # nothing served in the last minute


async def test_a_locked_ledger_keeps_serving_and_loses_nothing(
    service: Service, tmp_path: Path
) -> None:
    b, clock = service
    await b._db(lambda c: c.execute("PRAGMA busy_timeout=10"))  # fail fast, not after 5 s
    rec = Recorder(b.record, replica="g1")
    rec.end(row(1, T0))
    await rec.flush_once()
    other = store.connect(tmp_path / store.FILE_NAME)
    other.execute("BEGIN IMMEDIATE")  # another process holds the write lock
    for i in (2, 3):
        rec.end(row(i, T0 + i))
    await rec.flush_once()
    b.status(status("n1", 0.0), "a")
    clock.now += 3_600.0
    b.status(status("n1", 1_800.0), "a")  # a finished chunk: its write is held
    await asyncio.gather(*b._writes)
    health = b.ledger_health()
    assert rec.buffered == 2 and not health["writable"]
    assert health["rows_waiting"] == 3 and health["write_errors"] >= 2
    text = render(await b.metrics(), NodeTable()).decode()
    assert "meterless:ledger_writable 0.0" in text and "meterless:ledger_rows_waiting 3.0" in text
    other.execute("ROLLBACK")
    await rec.flush_once()
    assert rec.buffered == 0 and b.ledger_health()["writable"]
    assert b.ledger_health()["rows_waiting"] == 0
    assert await b._db(store.count) == 3
    samples = await b._db(lambda c: c.execute("SELECT COUNT(*) FROM node_samples").fetchone())
    assert samples == (1,)
    await rec.flush_once()  # sent again after a lost answer, say: still once each
    assert await b._db(store.count) == 3


async def test_metrics_come_from_totals_read_once_not_from_a_scan(
    service: Service, tmp_path: Path
) -> None:
    b, _ = service
    b.node_described(describe("n1"))
    await b.record(
        UsageBatch(replica="g", rows=(row(1, T0),), inflight=0, pending=0, closing=False)
    )
    other = store.connect(tmp_path / store.FILE_NAME)
    store.insert_requests(other, [row(2, T0)])  # behind the service's back
    metrics = (await b.metrics())["nodes"][0]
    report = (await b.cost(Window.parse("all")))["nodes"][0]
    assert metrics["cloud_equivalent_usd"] * 2 == pytest.approx(report["cloud_equivalent_usd"])
    await b.record(
        UsageBatch(replica="g", rows=(row(3, T0),), inflight=0, pending=0, closing=False)
    )
    again = (await b.metrics())["nodes"][0]
    assert again["cloud_equivalent_usd"] == pytest.approx(metrics["cloud_equivalent_usd"] * 2)


async def test_prune_keeps_the_cost_report_and_shrinks_the_ledger(service: Service) -> None:
    b, clock = service
    b.node_described(describe("n1"))
    b.status(status("n1", 0.0), "a")
    rows = tuple(row(i, T0 + i * 1_800.0) for i in range(10))  # five hours, two an hour
    await b.record(UsageBatch(replica="g", rows=rows, inflight=0, pending=0, closing=False))
    for hour in range(1, 6):
        clock.now = T0 + hour * 3_600.0
        b.status(status("n1", hour * 900.0), "a")  # a quarter of each hour busy
    await asyncio.gather(*b._writes)
    before = await b.cost(Window.parse("all"))
    done = await b.prune(T0 + 3 * 3_600.0)
    assert (done["requests"], await b._db(store.count)) == (6, 4)
    after = await b.cost(Window.parse("all"))
    assert after["nodes"][0]["tokens"] == before["nodes"][0]["tokens"]
    assert rounded(after) == rounded(before)
