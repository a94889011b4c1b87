"""The dashboard's series: ranges and bucket sizes, per-bucket sums on a real ledger file,
percentiles, cumulative money and the CSV export."""

from __future__ import annotations

from pathlib import Path

import pytest

from cluster.errors import InvalidRequest
from cluster.ledger import prices, series, store, timeline
from cluster.ledger.cost import Tokens
from cluster.ledger.energy import NodeSample
from cluster.ledger.rows import Outcome
from cluster.types import CostProfile
from tests.unit.ledger.test_store import row

NOW = 1_800_000_000.0  # a multiple of every step but a week's


def test_each_named_range_ends_now_and_has_at_most_max_buckets() -> None:
    for name, seconds in series.RANGES_S.items():
        span = series.Span.parse(name, None, None, NOW)
        assert span.end == NOW
        assert span.start <= NOW - seconds < span.start + span.step
        assert len(span.buckets()) <= series.MAX_BUCKETS + 1
    assert series.Span.parse("hour", None, None, NOW).step == 60
    assert series.Span.parse("month", None, None, NOW).step == 6 * 3_600


def test_a_custom_range_is_cut_at_now_and_checked() -> None:
    span = series.Span.parse("custom", NOW - 7_200, NOW + 99_999, NOW)
    assert (span.start, span.end, span.step) == (NOW - 7_200, NOW, 60)
    for start, end in ((None, NOW), (NOW, NOW - 1), (-5.0, NOW)):
        with pytest.raises(InvalidRequest):
            series.Span.parse("custom", start, end, NOW)
    with pytest.raises(InvalidRequest, match="range"):
        series.Span.parse("year", None, None, NOW)


def test_traffic_sums_per_bucket_and_group_with_empty_buckets_as_zero(tmp_path: Path) -> None:
    conn = store.connect(tmp_path / store.FILE_NAME)
    at = NOW - 3_000
    rows = [
        row(1, at=at, model="a"),
        row(2, at=at + 10, model="a", outcome=Outcome.ERROR),
        row(3, at=at + 120, model="b"),
        row(4, at=NOW - 7_200, model="a"),  # before the range
    ]
    store.insert_requests(conn, rows)
    span = series.Span.parse("hour", None, None, NOW)
    got = series.traffic(span, timeline.traffic(conn, span, "model"))
    a, b = got["groups"]["a"], got["groups"]["b"]
    i = got["buckets"].index(int(at // 60 * 60))
    assert a["requests"][i] == 2 and a["error"][i] == 1 and a["ok"][i] == 1
    assert a["prompt_tokens"][i] == 30 and a["completion_tokens"][i] == 3
    assert a["ttft_sum"][i] == 1.0 and a["ttft_n"][i] == 2
    assert sum(a["requests"]) == 2 and sum(b["requests"]) == 1 and b["requests"][i + 2] == 1
    assert len(a["requests"]) == len(got["buckets"])
    by_outcome = series.traffic(span, timeline.traffic(conn, span, "outcome"))["groups"]
    assert sum(by_outcome["error"]["requests"]) == 1


def test_groups_past_the_biggest_are_summed_as_other() -> None:
    span = series.Span(NOW - 60, NOW, 60)
    rows = [(int(NOW - 60), f"m{i}", 1, i, i, 0, 0, 1, 0, 0, 0) for i in range(12)]
    groups = series.traffic(span, rows)["groups"]
    assert len(groups) == series.MAX_GROUPS + 1
    assert "m11" in groups and "m0" not in groups
    assert groups["other"]["requests"] == [4.0]  # m0..m3


def test_percentiles_are_nearest_rank() -> None:
    assert series.percentiles([], (0.5,)) == [None]
    assert series.percentiles([3.0, 1.0, 2.0, 4.0], (0.5, 0.95, 1.0)) == [2.0, 4.0, 4.0]


def test_recent_totals() -> None:
    got = series.recent([(100, 0.2, "ok"), (50, None, "error"), (150, 0.4, "ok")], 60.0)
    assert got["requests"] == 3 and got["errors"] == 1
    assert got["tokens_per_s"] == 5.0 and got["requests_per_min"] == 3.0
    assert (got["ttft_p50_s"], got["ttft_p95_s"]) == (0.2, 0.4)


def test_money_accumulates_amortisation_energy_and_cloud_equivalent(tmp_path: Path) -> None:
    conn = store.connect(tmp_path / store.FILE_NAME)
    profile = CostProfile(
        price_usd=720.0, amortize_months=1.0, idle_watts=0, busy_watts=1000, kwh_usd=1.0
    )
    store.node_seen(conn, "n1", "mini", profile, NOW - 1_800)
    store.insert_requests(conn, [row(i, at=NOW - 1_000 + i, model="demo") for i in (1, 2)])
    busy = NodeSample(node_id="n1", t0=NOW - 960, t1=NOW - 900, busy_s=36.0, idle_s=24.0)
    store.insert_samples(conn, [busy])
    span = series.Span.parse("hour", None, None, NOW)
    inputs = series.MoneyInputs(
        span=span,
        now=NOW,
        served=timeline.served(conn, span),
        power=timeline.power(conn, span),
        nodes=store.nodes(conn),
        prices=prices.load(None),
        provider_prices={},
    )
    got = series.money(inputs)
    owned = got["owned_usd"]
    assert owned == sorted(owned) and owned[0] == 0.0  # before the node was seen: nothing
    hardware = 720.0 * 1_800 / (30.436875 * 86_400)  # a month of amortisation, pro rata
    assert owned[-1] == pytest.approx(hardware + 0.01, rel=1e-3)  # 36 s at 1 kW, $1/kWh
    assert got["cloud_usd"][-1] > 0 and got["rented_usd"][-1] == 0.0


def test_rented_spend_is_priced_at_the_providers_list_prices() -> None:
    span = series.Span(NOW - 60, NOW, 60)
    price = prices.parse(prices.shipped()).prices
    name = next(iter(price))
    served = [(int(NOW - 60), "provider:acme", "big", Tokens(prompt=1_000_000))]
    inputs = series.MoneyInputs(
        span=span,
        now=NOW,
        served=served,
        power={},
        nodes={},
        prices=prices.load(None),
        provider_prices={"acme": {"big": price[name]}},
    )
    assert series.money(inputs)["rented_usd"] == [float(price[name].input)]


def test_the_csv_has_a_line_per_bucket_and_group() -> None:
    span = series.Span(NOW - 120, NOW, 60)
    rows = [(int(NOW - 120), "demo", 2, 10, 5, 0.5, 2, 2, 0, 0, 0)]
    lines = series.traffic_csv(series.traffic(span, rows)).splitlines()
    assert lines[0].startswith("bucket_start,group,requests,prompt_tokens")
    assert lines[1] == f"{int(NOW - 120)},demo,2,10,5,0.500000,2,2,0,0,0"
    assert lines[2] == f"{int(NOW - 60)},demo,0,0,0,0,0,0,0,0,0"
