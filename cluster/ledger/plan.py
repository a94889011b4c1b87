"""`cluster cost plan`: would buying a machine pay for itself? Pure, exact arithmetic, shown.

From a month's demand (prompt and completion tokens), a machine (price, watts, tokens/s) and a
cloud model's list prices: what the month costs rented, what the machine would spend on
electricity to serve it, the monthly saving, and the months until the saving has repaid the
price. Every figure is a Fraction and every step is kept with its formula, written with the
numbers it used, so that the answer can be checked by hand. The model:

- the machine generates `tokens_per_s` completion tokens per second, one month being
  SECONDS_PER_MONTH (cluster/ledger/cost.py); prompt processing is taken as free of time;
- it draws `watts` while generating and `idle_watts` the rest of the month;
- when the month's completion tokens need more seconds than a month has, it serves the share
  it can (prompt tokens in the same share) and the rest stays rented;
- monthly saving = the served tokens' cloud price - electricity; breakeven = price / saving;
  never when the saving is not positive.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from fractions import Fraction

from cluster.ledger import cost
from cluster.ledger.cost import JOULES_PER_KWH, SECONDS_PER_MONTH, TOKENS_PER_MTOK, Price, Profile


@dataclass(frozen=True, kw_only=True)
class Machine:
    """The machine to buy: its price, power, speed, electricity and write-off period."""

    price_usd: Fraction
    watts: Fraction  # while generating
    tokens_per_s: Fraction  # completion tokens generated per second
    kwh_usd: Fraction
    idle_watts: Fraction = Fraction(0)
    amortize_months: Fraction = Profile().amortize_months


@dataclass(frozen=True, kw_only=True)
class Demand:
    """Tokens asked for: a month's (declared), or a window's that the plan scales to a month."""

    prompt: Fraction
    completion: Fraction
    window_s: Fraction | None = None  # None: already a month's


@dataclass(frozen=True)
class Step:
    """One line of the arithmetic: what it is, the formula with its numbers, and the result."""

    key: str
    label: str
    formula: str
    value: Fraction
    unit: str


@dataclass(frozen=True, kw_only=True)
class Plan:
    """The steps, and the answers they lead to."""

    steps: list[Step] = field(default_factory=list)
    fits: bool = True  # the machine can generate the whole month's completion tokens
    served_share: Fraction = Fraction(1)
    monthly_saving_usd: Fraction = Fraction(0)
    breakeven_months: Fraction | None = None  # None: never

    def value(self, key: str) -> Fraction:
        """The result of the step called `key`."""
        return next(s.value for s in self.steps if s.key == key)


def plan(demand: Demand, machine: Machine, reference: str, price: Price) -> Plan:
    """Months to breakeven and the monthly saving of serving `demand` on `machine`."""
    steps = _Steps()
    demand = _monthly(steps, demand)
    need_s = steps.add(
        "generation_s",
        "seconds of generation the month needs",
        f"{num(demand.completion)} completion tokens / {num(machine.tokens_per_s)} tokens/s",
        demand.completion / machine.tokens_per_s,
        "s",
    )
    busy = steps.add(
        "busy_share",
        "share of the month the machine is generating",
        f"{num(need_s)} s / {num(SECONDS_PER_MONTH)} s in a month (365.25 days / 12)",
        need_s / SECONDS_PER_MONTH,
        "",
    )
    share = Fraction(1) if busy <= 1 else 1 / busy
    if busy > 1:
        steps.add(
            "served_share",
            "share of the demand it can serve (the rest stays rented)",
            f"{num(SECONDS_PER_MONTH)} s in a month / {num(need_s)} s needed",
            share,
            "",
        )
        busy = Fraction(1)
    prompt, completion = demand.prompt * share, demand.completion * share
    if share != 1:
        steps.add(
            "served_prompt_tokens",
            "prompt tokens it serves",
            f"{num(demand.prompt)} x {num(SECONDS_PER_MONTH)} s / {num(need_s)} s",
            prompt,
            "tokens",
        )
        steps.add(
            "served_completion_tokens",
            "completion tokens it serves",
            f"{num(demand.completion)} x {num(SECONDS_PER_MONTH)} s / {num(need_s)} s",
            completion,
            "tokens",
        )
    cloud = _cloud(steps, prompt, completion, reference, price)
    energy = _energy(steps, busy, machine)
    saving = steps.add(
        "monthly_saving_usd",
        "monthly saving",
        f"{usd(cloud)} rented - {usd(energy)} electricity",
        cloud - energy,
        "USD",
    )
    _amortised(steps, saving, machine)
    months = machine.price_usd / saving if saving > 0 else None
    if months is not None:
        steps.add(
            "breakeven_months",
            "months to breakeven",
            f"{usd(machine.price_usd)} price / {usd(saving)} saved a month",
            months,
            "months",
        )
    return Plan(
        steps=list(steps),
        fits=share == 1,
        served_share=share,
        monthly_saving_usd=saving,
        breakeven_months=months,
    )


def _monthly(steps: _Steps, d: Demand) -> Demand:
    """A window's demand scaled to a month, the scaling shown; a month's as it is."""
    if d.window_s is None:
        return d
    scale = f" x {num(SECONDS_PER_MONTH)} s in a month / {num(d.window_s)} s in the window"
    prompt = steps.add(
        "monthly_prompt_tokens",
        "prompt tokens a month",
        f"{num(d.prompt)} tokens{scale}",
        d.prompt * SECONDS_PER_MONTH / d.window_s,
        "tokens",
    )
    completion = steps.add(
        "monthly_completion_tokens",
        "completion tokens a month",
        f"{num(d.completion)} tokens{scale}",
        d.completion * SECONDS_PER_MONTH / d.window_s,
        "tokens",
    )
    return Demand(prompt=prompt, completion=completion)


def _cloud(
    steps: _Steps, prompt: Fraction, completion: Fraction, ref: str, price: Price
) -> Fraction:
    """What the served tokens cost at the reference model's list prices."""
    p = steps.add(
        "cloud_prompt_usd",
        f"prompt tokens at {ref}'s input price",
        f"{num(prompt)} tokens x {usd(price.input)} / {num(TOKENS_PER_MTOK)}",
        prompt * price.input / TOKENS_PER_MTOK,
        "USD",
    )
    c = steps.add(
        "cloud_completion_usd",
        f"completion tokens at {ref}'s output price",
        f"{num(completion)} tokens x {usd(price.output)} / {num(TOKENS_PER_MTOK)}",
        completion * price.output / TOKENS_PER_MTOK,
        "USD",
    )
    return steps.add("cloud_usd", "the month rented", f"{usd(p)} + {usd(c)}", p + c, "USD")


def _energy(steps: _Steps, busy: Fraction, m: Machine) -> Fraction:
    """The month's electricity: generating at `watts`, idle the rest of the time."""
    busy_s, idle_s = busy * SECONDS_PER_MONTH, (1 - busy) * SECONDS_PER_MONTH
    joules = m.watts * busy_s + m.idle_watts * idle_s
    kwh = steps.add(
        "energy_kwh",
        "electricity a month",
        f"({num(m.watts)} W x {num(busy_s)} s + {num(m.idle_watts)} W x {num(idle_s)} s)"
        f" / {num(JOULES_PER_KWH)} J/kWh",
        joules / JOULES_PER_KWH,
        "kWh",
    )
    profile = Profile(kwh_usd=m.kwh_usd)
    return steps.add(
        "energy_usd",
        "electricity cost a month",
        f"{num(kwh)} kWh x {usd(m.kwh_usd)}/kWh",
        cost.energy_usd(profile, joules),
        "USD",
    )


def _amortised(steps: _Steps, saving: Fraction, m: Machine) -> None:
    """The saving left once the price is written off over the amortisation period."""
    profile = Profile(price_usd=m.price_usd, amortize_months=m.amortize_months)
    write_off = steps.add(
        "amortised_usd",
        "price written off a month",
        f"{usd(m.price_usd)} / {num(m.amortize_months)} months",
        cost.amortized_usd(profile, SECONDS_PER_MONTH),
        "USD",
    )
    steps.add(
        "net_monthly_saving_usd",
        "monthly saving after the write-off",
        f"{usd(saving)} - {usd(write_off)}",
        saving - write_off,
        "USD",
    )


class _Steps(list[Step]):
    """The steps so far; `add` keeps one and hands its value on to the next."""

    def add(self, key: str, label: str, formula: str, value: Fraction, unit: str) -> Fraction:
        """Keep a step; its value."""
        self.append(Step(key, label, formula, value, unit))
        return value


def num(x: Fraction | int) -> str:
    """A number as a person writes it: whole numbers exact with thousands separators, others
    to 4 decimals (more significant digits when it is that small)."""
    x = Fraction(x)
    if x.denominator == 1:
        return f"{x.numerator:,}"
    text = f"{float(x):,.4f}".rstrip("0").rstrip(".")
    return text if text not in ("0", "-0") else f"{float(x):.3g}"


def usd(x: Fraction) -> str:
    """Dollars: `$1,234.5678` (to 4 decimals; more digits when it is that small)."""
    return f"-${num(-x)}" if x < 0 else f"${num(x)}"
