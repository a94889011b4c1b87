"""`cluster cost plan`'s arithmetic against hand calculations, exactly (Fractions)."""

from __future__ import annotations

from fractions import Fraction as F

from cluster.ledger.cost import Price
from cluster.ledger.plan import Demand, Machine, num, plan, usd

GPT_4O = Price(input=F("2.50"), output=F("10.00"), cached_input=F("1.25"))
MACHINE = Machine(
    price_usd=F(2000),
    watts=F(60),
    idle_watts=F(10),
    tokens_per_s=F(25),
    kwh_usd=F("0.30"),
    amortize_months=F(36),
)
MONTH = F(2_629_800)  # seconds: 365.25 days / 12


def test_a_machine_that_pays_for_itself() -> None:
    p = plan(Demand(prompt=F(20_000_000), completion=F(5_000_000)), MACHINE, "gpt-4o", GPT_4O)
    # By hand: 5M tokens / 25 tokens/s = 200,000 s of generation, the rest of the month idle.
    assert p.value("generation_s") == 200_000
    assert p.value("busy_share") == F(200_000) / MONTH
    # Rented: 20M x $2.50/Mtok + 5M x $10/Mtok = $50 + $50.
    assert (p.value("cloud_prompt_usd"), p.value("cloud_completion_usd")) == (50, 50)
    assert p.value("cloud_usd") == 100
    # Electricity: 60 W x 200,000 s + 10 W x 2,429,800 s = 36,298,000 J = 18149/1800 kWh.
    assert p.value("energy_kwh") == F(36_298_000, 3_600_000)
    assert p.value("energy_usd") == F(18149, 1800) * F(3, 10)  # $3.02483...
    # Saving $100 - $18149/6000 a month; $2,000 / that = 12,000,000 / 581,851 months.
    assert p.monthly_saving_usd == F(581_851, 6000)
    assert p.breakeven_months == F(12_000_000, 581_851)  # 20.62...
    assert p.value("amortised_usd") == F(2000, 36)
    assert p.value("net_monthly_saving_usd") == F(581_851, 6000) - F(500, 9)
    assert p.fits and p.served_share == 1


def test_steps_show_the_numbers_they_used() -> None:
    p = plan(Demand(prompt=F(20_000_000), completion=F(5_000_000)), MACHINE, "gpt-4o", GPT_4O)
    formulas = {s.key: s.formula for s in p.steps}
    assert formulas["generation_s"] == "5,000,000 completion tokens / 25 tokens/s"
    assert formulas["cloud_prompt_usd"] == "20,000,000 tokens x $2.5 / 1,000,000"
    assert formulas["energy_kwh"] == ("(60 W x 200,000 s + 10 W x 2,429,800 s) / 3,600,000 J/kWh")
    assert formulas["breakeven_months"] == "$2,000 price / $96.9752 saved a month"


def test_a_demand_past_the_machine_is_served_in_part() -> None:
    slow = Machine(price_usd=F(2000), watts=F(60), tokens_per_s=F(1), kwh_usd=F("0.30"))
    p = plan(Demand(prompt=F(20_000_000), completion=F(5_000_000)), slow, "gpt-4o", GPT_4O)
    # 5M s of generation needed, a month has 2,629,800: it serves 2,629,800/5M of the demand.
    assert not p.fits and p.served_share == MONTH / 5_000_000
    assert p.value("served_completion_tokens") == MONTH  # 1 token/s all month
    assert p.value("served_prompt_tokens") == 4 * MONTH
    assert p.value("cloud_completion_usd") == MONTH * 10 / 1_000_000
    assert p.value("cloud_prompt_usd") == 4 * MONTH * F(5, 2) / 1_000_000
    assert p.value("energy_usd") == 60 * MONTH / 3_600_000 * F(3, 10)  # busy all month
    assert p.monthly_saving_usd == F("52.596") - F("13.149")


def test_a_machine_that_never_breaks_even() -> None:
    p = plan(Demand(prompt=F(0), completion=F(1000)), MACHINE, "gpt-4o", GPT_4O)
    assert p.monthly_saving_usd < 0 and p.breakeven_months is None
    assert "breakeven_months" not in {s.key for s in p.steps}


def test_a_window_of_the_ledger_is_scaled_to_a_month() -> None:
    thirty_days = F(30 * 86_400)
    demand = Demand(prompt=F(1_000_000), completion=F(300_000), window_s=thirty_days)
    p = plan(demand, MACHINE, "gpt-4o", GPT_4O)
    assert p.value("monthly_prompt_tokens") == F(1_000_000) * MONTH / thirty_days
    assert p.value("monthly_completion_tokens") == F(300_000) * F("30.4375") / 30
    assert p.value("generation_s") == F(300_000) * F("30.4375") / 30 / 25


def test_numbers_are_written_for_people() -> None:
    assert [num(F(2_629_800)), num(F(1, 3)), num(F(1, 100_000)), usd(F(-5, 2))] == [
        "2,629,800",
        "0.3333",
        "1e-05",
        "-$2.5",
    ]
