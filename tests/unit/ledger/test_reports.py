"""Report inputs (ledger/reports.py): windows and set-cost bodies."""

from __future__ import annotations

import pytest

from cluster.errors import InvalidRequest
from cluster.ledger.reports import Window, parse_before, parse_cost_changes


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
