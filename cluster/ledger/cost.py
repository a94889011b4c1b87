"""What a node costs, and what its tokens would have cost in the cloud: pure, exact arithmetic.

Every figure is a Fraction (a float converts to one exactly), so the same inputs always give the
same answer to the last digit; only the views round. The model:

- hardware: straight-line amortisation, price x (seconds owned in the window / amortisation
  period), a month being a twelfth of a Julian year (2,629,800 s);
- energy: measured joules where the node reported its power, else its configured idle and busy
  watts x its idle and busy seconds; times the electricity price per kWh;
- cost = hardware + energy; $/Mtok = cost per million tokens served (prompt + completion);
  marginal $/Mtok = energy alone per million tokens;
- cloud-equivalent: the same prompt, cached-prompt and completion tokens at a reference model's
  list prices; savings = cloud-equivalent - cost;
- breakeven: the day the node's net recovery (cloud-equivalent - energy) will, at the window's
  daily rate, have repaid its purchase price; never when that rate is not positive.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from fractions import Fraction

from cluster.types import CostProfile

SECONDS_PER_DAY = 86_400
SECONDS_PER_MONTH = Fraction(36_525 * SECONDS_PER_DAY, 1_200)  # 365.25 days / 12
JOULES_PER_KWH = 3_600_000
TOKENS_PER_MTOK = 1_000_000

Number = Fraction | float | int


@dataclass(frozen=True, kw_only=True)
class Profile:
    """A node's cost profile in exact numbers."""

    price_usd: Fraction = Fraction(0)
    amortize_months: Fraction = Fraction(36)
    idle_watts: Fraction = Fraction(0)
    busy_watts: Fraction = Fraction(0)
    kwh_usd: Fraction = Fraction(0)

    @classmethod
    def of(cls, p: CostProfile) -> Profile:
        """The exact profile of a (float) CostProfile."""
        return cls(
            price_usd=Fraction(p.price_usd),
            amortize_months=Fraction(p.amortize_months),
            idle_watts=Fraction(p.idle_watts),
            busy_watts=Fraction(p.busy_watts),
            kwh_usd=Fraction(p.kwh_usd),
        )


@dataclass(frozen=True, kw_only=True)
class Price:
    """A cloud model's list prices in USD per million tokens."""

    input: Fraction
    output: Fraction
    cached_input: Fraction | None = None  # None: cached prompt tokens cost the input price


@dataclass(frozen=True, kw_only=True)
class Tokens:
    """Tokens served: prompt (of which cached) and completion."""

    prompt: int = 0
    cached_prompt: int = 0
    completion: int = 0

    @property
    def total(self) -> int:
        """Prompt plus completion tokens."""
        return self.prompt + self.completion

    def __add__(self, other: Tokens) -> Tokens:
        return Tokens(
            prompt=self.prompt + other.prompt,
            cached_prompt=self.cached_prompt + other.cached_prompt,
            completion=self.completion + other.completion,
        )


@dataclass(frozen=True, kw_only=True)
class Power:
    """A node's time and energy in a window: busy and idle seconds, and what was measured."""

    busy_s: Fraction = Fraction(0)
    idle_s: Fraction = Fraction(0)
    measured_s: Fraction = Fraction(0)  # seconds whose power the node measured
    measured_j: Fraction = Fraction(0)  # joules over those seconds
    unmeasured_busy_s: Fraction = Fraction(0)  # seconds priced at the configured watts
    unmeasured_idle_s: Fraction = Fraction(0)

    @property
    def source(self) -> str:
        """Where the energy figure comes from: measured, configured, mixed, or none."""
        unmeasured = self.unmeasured_busy_s + self.unmeasured_idle_s
        if self.measured_s and unmeasured:
            return "mixed"
        return "measured" if self.measured_s else "configured" if unmeasured else "none"


@dataclass(frozen=True, kw_only=True)
class NodeWindow:
    """What the ledger knows about one node over one window."""

    owned_s: Fraction  # seconds of the window the node was in service (amortised)
    power: Power
    tokens: Tokens
    cloud_usd: Fraction


@dataclass(frozen=True, kw_only=True)
class NodeCost:
    """One node's (or the cluster's) cost over a window, and how it compares with the cloud."""

    hardware_usd: Fraction
    energy_usd: Fraction
    energy_kwh: Fraction
    energy_source: str  # measured, configured, mixed or none (see Power.source)
    cloud_usd: Fraction
    tokens: Tokens
    owned_s: Fraction
    busy_s: Fraction
    observed_s: Fraction  # busy + idle seconds the status stream covered

    @property
    def busy_ratio(self) -> Fraction | None:
        """Busy seconds over observed seconds; None when nothing was observed."""
        return self.busy_s / self.observed_s if self.observed_s else None

    @property
    def total_usd(self) -> Fraction:
        """Hardware plus energy."""
        return self.hardware_usd + self.energy_usd

    @property
    def savings_usd(self) -> Fraction:
        """Cloud-equivalent minus the whole cost."""
        return self.cloud_usd - self.total_usd

    @property
    def recovered_usd(self) -> Fraction:
        """Cloud-equivalent minus energy: what the window paid back towards the hardware."""
        return self.cloud_usd - self.energy_usd

    @property
    def usd_per_mtok(self) -> Fraction | None:
        """Amortised cost per million tokens; None with no tokens."""
        return per_mtok(self.total_usd, self.tokens.total)

    @property
    def marginal_usd_per_mtok(self) -> Fraction | None:
        """Energy cost per million tokens; None with no tokens."""
        return per_mtok(self.energy_usd, self.tokens.total)


def amortized_usd(profile: Profile, seconds: Number) -> Fraction:
    """The hardware's straight-line write-off for `seconds` of ownership."""
    if profile.amortize_months <= 0:
        return Fraction(0)
    return profile.price_usd * Fraction(seconds) / (profile.amortize_months * SECONDS_PER_MONTH)


def energy_joules(profile: Profile, power: Power) -> Fraction:
    """Measured joules plus the configured watts over the seconds nothing was measured."""
    configured = (
        profile.busy_watts * power.unmeasured_busy_s + profile.idle_watts * power.unmeasured_idle_s
    )
    return power.measured_j + configured


def energy_usd(profile: Profile, joules: Number) -> Fraction:
    """What `joules` of electricity cost at the profile's price per kWh."""
    return Fraction(joules) / JOULES_PER_KWH * profile.kwh_usd


def per_mtok(usd: Fraction, tokens: int) -> Fraction | None:
    """USD per million tokens; None with no tokens."""
    return usd * TOKENS_PER_MTOK / tokens if tokens else None


def cloud_usd(price: Price, tokens: Tokens) -> Fraction:
    """What the tokens would have cost at the cloud model's list prices."""
    cached_price = price.input if price.cached_input is None else price.cached_input
    uncached = tokens.prompt - tokens.cached_prompt
    usd_mtok = (
        price.input * uncached
        + cached_price * tokens.cached_prompt
        + price.output * tokens.completion
    )
    return usd_mtok / TOKENS_PER_MTOK


def node_cost(profile: Profile, window: NodeWindow) -> NodeCost:
    """A node's cost over a window."""
    joules = energy_joules(profile, window.power)
    return NodeCost(
        hardware_usd=amortized_usd(profile, window.owned_s),
        energy_usd=energy_usd(profile, joules),
        energy_kwh=joules / JOULES_PER_KWH,
        energy_source=window.power.source,
        cloud_usd=window.cloud_usd,
        tokens=window.tokens,
        owned_s=window.owned_s,
        busy_s=window.power.busy_s,
        observed_s=window.power.busy_s + window.power.idle_s,
    )


def total(costs: Iterable[NodeCost]) -> NodeCost:
    """The cluster's cost: the nodes' sums (owned seconds add up, as machine-seconds)."""
    costs = list(costs)
    return NodeCost(
        hardware_usd=sum((c.hardware_usd for c in costs), Fraction(0)),
        energy_usd=sum((c.energy_usd for c in costs), Fraction(0)),
        energy_kwh=sum((c.energy_kwh for c in costs), Fraction(0)),
        energy_source=combined_source(c.energy_source for c in costs),
        cloud_usd=sum((c.cloud_usd for c in costs), Fraction(0)),
        tokens=sum((c.tokens for c in costs), Tokens()),
        owned_s=sum((c.owned_s for c in costs), Fraction(0)),
        busy_s=sum((c.busy_s for c in costs), Fraction(0)),
        observed_s=sum((c.observed_s for c in costs), Fraction(0)),
    )


def combined_source(sources: Iterable[str]) -> str:
    """One word for several energy sources: the one they share, else mixed; none if empty."""
    found = {s for s in sources if s != "none"}
    if not found:
        return "none"
    return found.pop() if len(found) == 1 else "mixed"


def recovery_per_day(window: NodeCost) -> Fraction | None:
    """Net recovery (cloud-equivalent - energy) per day over the window; None for no time."""
    if window.owned_s <= 0:
        return None
    return window.recovered_usd * SECONDS_PER_DAY / window.owned_s


def breakeven(
    *, price_usd: Fraction, recovered_usd: Fraction, per_day: Fraction | None, now: datetime
) -> datetime | None:
    """When the recovery so far plus `per_day` from `now` repays the price; None: never.

    A node already paid for breaks even `now`. The date is rounded up to the whole second. A date
    past the last one a calendar can hold (the year 9999) is never, too.
    """
    remaining = price_usd - recovered_usd
    if remaining <= 0:
        return now
    if per_day is None or per_day <= 0:
        return None
    seconds = math.ceil(remaining / per_day * SECONDS_PER_DAY)
    if seconds > (datetime.max.replace(tzinfo=now.tzinfo) - now).total_seconds():
        return None
    return now + timedelta(seconds=seconds)
