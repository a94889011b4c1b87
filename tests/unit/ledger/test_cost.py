"""The cost model's arithmetic, pinned with exact numbers."""

from __future__ import annotations

from datetime import UTC, datetime
from fractions import Fraction as F

from cluster.ledger import cost
from cluster.ledger.cost import NodeWindow, Power, Price, Profile, Tokens
from cluster.types import CostProfile

# A $1,440 machine written off over 36 months, 10 W idle, 50 W busy, electricity at $0.25/kWh.
PROFILE = Profile(
    price_usd=F(1440), amortize_months=F(36), idle_watts=F(10), busy_watts=F(50), kwh_usd=F(1, 4)
)
# One day: 6 h busy, 18 h idle, power not measured; 1 M prompt tokens (200 k cached), 200 k out.
DAY = Power(
    busy_s=F(21_600), idle_s=F(64_800), unmeasured_busy_s=F(21_600), unmeasured_idle_s=F(64_800)
)
TOKENS = Tokens(prompt=1_000_000, cached_prompt=200_000, completion=200_000)
GPT_4O = Price(input=F(5, 2), cached_input=F(5, 4), output=F(10))
NOW = datetime(2026, 1, 1, tzinfo=UTC)


def test_a_month_is_a_twelfth_of_a_julian_year() -> None:
    assert cost.SECONDS_PER_MONTH == 2_629_800


def test_amortisation_is_straight_line() -> None:
    assert cost.amortized_usd(PROFILE, 86_400) == F(40) * 86_400 / 2_629_800 == F(5760, 4383)
    assert cost.amortized_usd(PROFILE, 36 * cost.SECONDS_PER_MONTH) == 1440
    assert cost.amortized_usd(Profile(price_usd=F(1000), amortize_months=F(0)), 86_400) == 0


def test_energy_from_configured_watts() -> None:
    joules = cost.energy_joules(PROFILE, DAY)
    assert joules == 50 * 21_600 + 10 * 64_800 == 1_728_000
    assert cost.energy_usd(PROFILE, joules) == F(48, 100) * F(1, 4) == F(3, 25)
    assert DAY.source == "configured"


def test_measured_energy_is_used_as_measured_and_the_rest_at_the_configured_watts() -> None:
    power = Power(
        busy_s=F(3_600),
        idle_s=F(3_600),
        measured_s=F(3_600),
        measured_j=F(180_000),
        unmeasured_idle_s=F(3_600),
    )
    assert cost.energy_joules(PROFILE, power) == 180_000 + 10 * 3_600
    assert power.source == "mixed"
    assert Power(measured_s=F(1), measured_j=F(5)).source == "measured"
    assert Power().source == "none"


def test_cloud_price_of_the_same_tokens() -> None:
    assert (
        cost.cloud_usd(GPT_4O, TOKENS)
        == (F(5, 2) * 800_000 + F(5, 4) * 200_000 + 10 * 200_000) / 1_000_000
        == F(17, 4)
    )
    no_cache_price = Price(input=F(5, 2), output=F(10))
    assert cost.cloud_usd(no_cache_price, TOKENS) == F(5, 2) + 2


def test_a_known_day_gives_a_known_dollars_per_mtok() -> None:
    c = cost.node_cost(
        PROFILE, NodeWindow(owned_s=F(86_400), power=DAY, tokens=TOKENS, cloud_usd=F(17, 4))
    )
    assert c.hardware_usd == F(5760, 4383) and c.energy_usd == F(3, 25)
    assert c.energy_kwh == F(48, 100) and c.energy_source == "configured"
    assert c.total_usd == F(5760, 4383) + F(3, 25)
    assert c.usd_per_mtok == (F(5760, 4383) + F(3, 25)) / F(6, 5)
    assert c.marginal_usd_per_mtok == F(1, 10)
    assert c.savings_usd == F(17, 4) - F(5760, 4383) - F(3, 25)
    assert c.busy_ratio == F(1, 4)
    assert cost.recovery_per_day(c) == F(17, 4) - F(3, 25) == F(413, 100)


def test_breakeven_date() -> None:
    # $40 recovered so far, $2 a day from now: the remaining $1,400 take 700 days.
    when = cost.breakeven(price_usd=F(1440), recovered_usd=F(40), per_day=F(2), now=NOW)
    assert when == datetime(2027, 12, 2, tzinfo=UTC)
    # At the known day's rate, from nothing: 1440 / 4.13 days, rounded up to the second.
    when = cost.breakeven(price_usd=F(1440), recovered_usd=F(0), per_day=F(413, 100), now=NOW)
    assert when is not None and (when - NOW).total_seconds() == 30_124_940


def test_breakeven_never_or_already() -> None:
    assert cost.breakeven(price_usd=F(100), recovered_usd=F(0), per_day=F(0), now=NOW) is None
    assert cost.breakeven(price_usd=F(100), recovered_usd=F(0), per_day=F(-1), now=NOW) is None
    assert cost.breakeven(price_usd=F(100), recovered_usd=F(0), per_day=None, now=NOW) is None
    assert cost.breakeven(price_usd=F(100), recovered_usd=F(100), per_day=F(0), now=NOW) == NOW


def test_a_breakeven_past_the_calendar_is_never() -> None:
    tiny = F(1, 10**12)
    assert cost.breakeven(price_usd=F(1440), recovered_usd=F(0), per_day=tiny, now=NOW) is None


def test_no_tokens_no_per_mtok() -> None:
    c = cost.node_cost(
        PROFILE, NodeWindow(owned_s=F(60), power=Power(), tokens=Tokens(), cloud_usd=F(0))
    )
    assert c.usd_per_mtok is None and c.marginal_usd_per_mtok is None and c.busy_ratio is None
    assert cost.recovery_per_day(c) == 0


def test_cluster_total_sums_nodes() -> None:
    a = cost.node_cost(
        PROFILE, NodeWindow(owned_s=F(86_400), power=DAY, tokens=TOKENS, cloud_usd=F(17, 4))
    )
    measured = Power(busy_s=F(100), idle_s=F(0), measured_s=F(100), measured_j=F(3_600_000))
    b = cost.node_cost(
        PROFILE,
        NodeWindow(
            owned_s=F(86_400), power=measured, tokens=Tokens(completion=1_000), cloud_usd=F(1)
        ),
    )
    t = cost.total([a, b])
    assert t.total_usd == a.total_usd + b.total_usd
    assert t.energy_usd == F(3, 25) + F(1, 4)  # b: 1 kWh measured
    assert t.tokens == Tokens(prompt=1_000_000, cached_prompt=200_000, completion=201_000)
    assert t.busy_ratio == F(21_700, 86_500)
    assert t.energy_source == "mixed"
    assert cost.total([]).busy_ratio is None and cost.total([]).energy_source == "none"


def test_profile_of_floats_is_exact() -> None:
    p = Profile.of(
        CostProfile(
            price_usd=1399.0, amortize_months=36.0, idle_watts=7.0, busy_watts=45.0, kwh_usd=0.25
        )
    )
    assert p.price_usd == 1399 and p.kwh_usd == F(1, 4)
