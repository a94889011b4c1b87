"""Report inputs (ledger/reports.py): windows and set-cost bodies; rented requests' cost."""

from __future__ import annotations

from fractions import Fraction as F

import pytest

from cluster.errors import InvalidRequest
from cluster.ledger import prices, reports
from cluster.ledger.cost import NodeCost, Price, Tokens
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


def _owned(hardware: F, energy: F, tokens: int) -> NodeCost:
    return NodeCost(
        hardware_usd=hardware,
        energy_usd=energy,
        energy_kwh=F(0),
        energy_source="configured",
        cloud_usd=F(0),
        tokens=Tokens(prompt=tokens),
        owned_s=F(0),
        busy_s=F(0),
        observed_s=F(0),
    )


def test_a_rented_models_tokens_priced_at_the_clusters_own_rates_by_hand() -> None:
    rows = [_served("provider:cloud", "gpt-4.1", 3, 1_000_000, 250_000)]
    owned = _owned(F(3), F(1), 2_000_000)  # $4 over 2M tokens: $2/Mtok, $0.50/Mtok marginal
    price = Price(input=F(2), output=F(8))
    home = reports.bring_home("gpt-4.1", rows, price, owned, F(86_400))
    # By hand: rented $2 + $2 = $4; 1.25M tokens here: x $2 = $2.50, x $0.50 = $0.625;
    # a day's saving of $1.50, over a month of 365.25 / 12 = 30.4375 days: $45.65625.
    assert home["cost_usd"] == 4.0 and home["tokens"] == 1_250_000
    assert home["owned_usd_per_mtok"] == 2.0 and home["owned_marginal_usd_per_mtok"] == 0.5
    assert home["at_owned_usd"] == 2.5 and home["at_owned_marginal_usd"] == 0.625
    assert home["saving_per_month_usd"] == float(F("1.5") * F("30.4375")) == 45.65625
    assert home["requests"] == 3


def test_no_saving_is_claimed_without_the_figures_it_needs() -> None:
    rows = [_served("provider:cloud", "m", 1, 10, 10)]
    price = Price(input=F(2), output=F(8))
    unpriced = reports.bring_home("m", rows, None, _owned(F(1), F(1), 10), F(60))
    assert unpriced["cost_usd"] is None and unpriced["saving_per_month_usd"] is None
    assert unpriced["at_owned_usd"] == 4.0  # $2 over 10 tokens here; 20 tokens: $4
    nothing_here = reports.bring_home("m", rows, price, _owned(F(1), F(0), 0), F(60))
    assert nothing_here["owned_usd_per_mtok"] is None and nothing_here["at_owned_usd"] is None
    all_time = reports.bring_home("m", rows, price, _owned(F(1), F(1), 10), None)
    assert all_time["at_owned_usd"] is not None and all_time["saving_per_month_usd"] is None


def test_the_cost_report_says_per_rented_model_what_it_would_cost_here() -> None:
    served = (_served("provider:cloud", "gpt-4.1", 3, 1_000_000, 250_000),)
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
    (cloud,) = reports.cost_report(inputs)["rented"]
    (model,) = cloud["models"]
    assert model["model"] == "gpt-4.1" and model["cost_usd"] == 4.0
    assert model["owned_usd_per_mtok"] is None  # no node served a token: no rate to compare


def test_a_rented_usage_group_has_its_spend_at_the_providers_prices_by_hand() -> None:
    groups = [
        {"key": "k1", "provider": None},
        {"key": "k1", "provider": "cloud"},
        {"key": "k2", "provider": "cloud"},
    ]
    spent = [
        ("k1", _served("provider:cloud", "gpt-4.1", 2, 1_000_000, 250_000)),
        ("k1", _served("provider:cloud", "unlisted", 1, 5, 5)),
        ("k2", _served("provider:cloud", "gpt-4.1", 1, 500_000, 0)),
        ("k1", _served("provider:other", "gpt-4.1", 1, 9, 9)),
    ]
    prices = {"cloud": {"gpt-4.1": Price(input=F(2), output=F(8))}}
    reports.usage_spend(groups, spent, prices, "key")
    assert "provider_usd" not in groups[0]  # the office's own: no provider spend
    # By hand: k1's 1M in x $2 + 250k out x $8 = $4; k2's 500k in x $2 = $1.
    assert groups[1]["provider_usd"] == 4.0 and groups[1]["unpriced_models"] == ["unlisted"]
    assert groups[2]["provider_usd"] == 1.0 and groups[2]["unpriced_models"] == []
