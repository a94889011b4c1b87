"""Report inputs (ledger/reports.py): windows and set-cost bodies; rented requests' cost."""

from __future__ import annotations

from fractions import Fraction as F

import pytest

from cluster.errors import InvalidRequest
from cluster.ledger import prices, reports
from cluster.ledger.cost import Price, Tokens
from cluster.ledger.reports import Window, parse_before, parse_cost_changes
from cluster.ledger.store import Served


def test_windows() -> None:
    assert Window.parse("24h") == Window("24h", 86_400)
    assert Window.parse("7d").seconds == 7 * 86_400 and Window.parse("30d").seconds == 30 * 86_400
    assert Window.parse("90m").seconds == 5_400 and Window.parse("1.5h").seconds == 5_400
    assert Window.parse("all").seconds is None and Window.parse("all").start(1e9) is None
    assert Window.parse("1h").start(10_000.0) == 6_400.0
    for bad in ("", "24", "h", "-1d", "1w", "all "):
        with pytest.raises(InvalidRequest) as err:
            Window.parse(bad)
        assert err.value.param == "since"


def test_set_cost_bodies() -> None:
    assert parse_cost_changes(b'{"price_usd": 1399, "kwh_usd": 0.3}') == {
        "price_usd": 1399.0,
        "kwh_usd": 0.3,
    }
    assert parse_cost_changes(b"{}") == {}
    for body, param in (
        (b'{"price": 1}', "price"),
        (b'{"idle_watts": -1}', "idle_watts"),
        (b'{"amortize_months": 0}', "amortize_months"),
        (b'{"busy_watts": "45"}', "busy_watts"),
        (b'{"kwh_usd": true}', "kwh_usd"),
    ):
        with pytest.raises(InvalidRequest) as err:
            parse_cost_changes(body)
        assert err.value.param == param
    for body in (b"[1]", b"{nope"):
        with pytest.raises(InvalidRequest):
            parse_cost_changes(body)


def test_prune_before_takes_a_date_or_a_time_in_utc_and_refuses_the_future() -> None:
    now = 1_767_225_600.0 + 86_400  # 2026-01-02T00:00:00Z
    assert parse_before("2026-01-01", now) == 1_767_225_600.0
    assert parse_before("2026-01-01T12:00", now) == 1_767_225_600.0 + 43_200
    assert parse_before("2026-01-01T12:00+02:00", now) == 1_767_225_600.0 + 36_000
    for bad, why in (("yesterday", "not a date"), ("2026-01-03", "in the future")):
        with pytest.raises(InvalidRequest) as info:
            parse_before(bad, now)
        assert info.value.param == "before" and why in str(info.value)


def test_rented_requests_are_priced_at_their_providers_prices_and_are_no_nodes() -> None:
    served = (
        _served("n1", "demo", 2, 100, 50),
        _served("provider:cloud", "gpt-4.1", 3, 1_000_000, 250_000),
        _served("provider:cloud", "unlisted", 1, 10, 10),
    )
    inputs = reports.CostInputs(
        label="24h",
        since=0.0,
        now=86_400.0,
        nodes={},
        window=reports.Snapshot(served=served),
        ever=reports.Snapshot(served=served),
        prices=prices.load(None),
        provider_prices={"cloud": {"gpt-4.1": Price(input=F(2), output=F(8))}},
    )
    report = reports.cost_report(inputs)
    assert [n["node_id"] for n in report["nodes"]] == ["n1"]
    assert report["total"]["tokens"]["total"] == 150  # rented tokens are not the cluster's
    (cloud,) = report["rented"]
    # By hand: 1M prompt x $2/Mtok + 250k completion x $8/Mtok = $2 + $2.
    assert cloud["cost_usd"] == 4.0 and cloud["usd_per_mtok"] == 4.0 / 1.25
    assert cloud["requests"] == 4 and cloud["unpriced_models"] == ["unlisted"]
    assert cloud["tokens"]["prompt"] == 1_000_010


def _served(node: str, model: str, requests: int, prompt: int, completion: int) -> Served:
    tokens = Tokens(prompt=prompt, completion=completion)
    return Served(node_id=node, model=model, requests=requests, tokens=tokens)
