"""The ledger's figures as the admin API serves them: windows, the cost report, set-cost input.

Pure: the controller reads the ledger and passes what it read; nothing here does I/O.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from fractions import Fraction
from typing import Any

from cluster.errors import InvalidRequest
from cluster.ledger import cost
from cluster.ledger.cost import NodeCost, NodeWindow, Power, Price, Profile, Tokens
from cluster.ledger.prices import PriceTable
from cluster.ledger.rows import RENTED_PREFIX
from cluster.ledger.store import NodeRecord, Served
from cluster.types import CostProfile

_WINDOW = re.compile(r"^(\d+(?:\.\d+)?)([mhd])$")
_UNIT_S = {"m": 60, "h": 3_600, "d": 86_400}
COST_FIELDS = {
    "price_usd": 0.0,
    "amortize_months": 1e-9,
    "idle_watts": 0.0,
    "busy_watts": 0.0,
    "kwh_usd": 0.0,
}  # field -> smallest allowed value


@dataclass(frozen=True)
class Window:
    """A report's time window as the admin wrote it (`24h`, `7d`, `90m`, `all`), parsed once."""

    label: str
    seconds: float | None  # None: all time

    @classmethod
    def parse(cls, since: str) -> Window:
        """The window `since` names; InvalidRequest (400, param `since`) if it names none."""
        if since == "all":
            return cls(since, None)
        match = _WINDOW.match(since)
        if not match:
            raise InvalidRequest(
                f"since: {since!r} is not `all` or a number followed by m, h or d", param="since"
            )
        return cls(since, float(match[1]) * _UNIT_S[match[2]])

    def start(self, now: float) -> float | None:
        """The window's first instant, for a report made at `now`; None for all time."""
        return None if self.seconds is None else now - self.seconds


def parse_before(text: str, now: float) -> float:
    """`prune --before`'s date (2026-01-31, or a time: 2026-01-31T12:00, UTC unless it says
    otherwise) as unix seconds; InvalidRequest (param `before`) if it is none or in the future."""
    try:
        at = datetime.fromisoformat(text)
    except ValueError:
        raise InvalidRequest(
            f"before: {text!r} is not a date (YYYY-MM-DD) or an ISO time", param="before"
        ) from None
    when = (at if at.tzinfo else at.replace(tzinfo=UTC)).timestamp()
    if when > now:
        raise InvalidRequest(f"before: {text} is in the future", param="before")
    return when


def parse_cost_changes(body: bytes) -> dict[str, float]:
    """The profile fields a set-cost request changes; InvalidRequest names a bad one."""
    try:
        data = json.loads(body or b"{}")
    except ValueError:
        raise InvalidRequest("the body is not JSON") from None
    if not isinstance(data, dict):
        raise InvalidRequest("the body must be a JSON object")
    changes: dict[str, float] = {}
    for name, value in data.items():
        if name not in COST_FIELDS:
            raise InvalidRequest(
                f"unknown field {name!r}; known: {', '.join(COST_FIELDS)}", param=name
            )
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise InvalidRequest(f"{name} must be a number", param=name)
        if not math.isfinite(value) or value < COST_FIELDS[name]:
            what = "positive" if name == "amortize_months" else "zero or more"
            raise InvalidRequest(f"{name} must be {what}", param=name)
        changes[name] = float(value)
    return changes


@dataclass(frozen=True, kw_only=True)
class Snapshot:
    """What the ledger holds for one window: tokens per (node, model) and power per node."""

    served: Sequence[Served] = ()
    power: Mapping[str, Power] = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True)
class CostInputs:
    """Everything the cost report is computed from."""

    label: str  # how the window was asked for: "24h", "all", ...
    since: float | None  # unix seconds; None: everything
    now: float
    nodes: Mapping[str, NodeRecord]
    window: Snapshot
    ever: Snapshot  # the same since the beginning, for what has been recovered so far
    prices: PriceTable
    # Each provider's list prices by the model it served (`cluster providers add --price`).
    provider_prices: Mapping[str, Mapping[str, Price]] = field(default_factory=dict)


def node_costs(
    inputs: CostInputs, snap: Snapshot, since: float | None
) -> dict[str, tuple[NodeCost, int]]:
    """Each node's cost over [since, now], with its request count (rented requests are no
    node's: see `rented`)."""
    ids = set(inputs.nodes) | {s.node_id for s in snap.served} | set(snap.power)
    ids = {i for i in ids if not i.startswith(RENTED_PREFIX)}
    out = {}
    for node_id in sorted(ids):
        record = inputs.nodes.get(node_id)
        mine = [s for s in snap.served if s.node_id == node_id]
        tokens = sum((s.tokens for s in mine), Tokens())
        cloud = sum(
            (cost.cloud_usd(inputs.prices.price(s.model), s.tokens) for s in mine), Fraction(0)
        )
        start = record.first_seen if record else inputs.now
        owned = max(inputs.now - (start if since is None else max(since, start)), 0.0)
        window = NodeWindow(
            owned_s=Fraction(owned),
            power=snap.power.get(node_id, Power()),
            tokens=tokens,
            cloud_usd=cloud,
        )
        profile = Profile.of(record.profile if record else CostProfile())
        out[node_id] = (cost.node_cost(profile, window), sum(s.requests for s in mine))
    return out


def cost_report(inputs: CostInputs) -> dict[str, Any]:
    """Per node and in total: tokens, busy %, cost, $/Mtok, cloud-equivalent, savings, breakeven."""
    window = node_costs(inputs, inputs.window, inputs.since)
    ever = window if inputs.since is None else node_costs(inputs, inputs.ever, None)
    now = datetime.fromtimestamp(inputs.now, UTC)
    nodes = []
    for node_id, (c, requests) in window.items():
        record = inputs.nodes.get(node_id)
        profile = record.profile if record else CostProfile()
        recovered = ever[node_id][0].recovered_usd if node_id in ever else Fraction(0)
        nodes.append(
            {
                "node_id": node_id,
                "name": record.name if record else node_id,
                "profile": _profile_json(profile),
                "profile_source": "admin" if record and record.override else "agent",
                **figures(c, requests, Fraction(profile.price_usd), recovered, now),
            }
        )
    price = sum((Fraction(r.profile.price_usd) for r in inputs.nodes.values()), Fraction(0))
    recovered = sum((c.recovered_usd for c, _ in ever.values()), Fraction(0))
    total = cost.total(c for c, _ in window.values())
    return {
        "since": inputs.label,
        "start": _iso(inputs.since),
        "end": _iso(inputs.now),
        "prices": prices_json(inputs.prices, {s.model for s in inputs.window.served}),
        "nodes": nodes,
        "total": figures(total, sum(r for _, r in window.values()), price, recovered, now),
        "rented": rented(inputs, total),
    }


def rented(inputs: CostInputs, owned: NodeCost | None = None) -> list[dict[str, Any]]:
    """Per provider over the window: requests, the tokens it reported, and what they cost at
    its list prices (models it has no price for are named, not guessed); per model, what the
    same tokens would have cost at the cluster's measured $/Mtok (`owned`: its total)."""
    mine: dict[str, list[Served]] = {}
    for s in inputs.window.served:
        if s.node_id.startswith(RENTED_PREFIX):
            mine.setdefault(s.node_id.removeprefix(RENTED_PREFIX), []).append(s)
    span = None if inputs.since is None else Fraction(inputs.now) - Fraction(inputs.since)
    out = []
    for name, rows in sorted(mine.items()):
        prices = inputs.provider_prices.get(name, {})
        priced = [s for s in rows if s.model in prices]
        usd = sum((cost.cloud_usd(prices[s.model], s.tokens) for s in priced), Fraction(0))
        tokens = sum((s.tokens for s in rows), Tokens())
        out.append(
            {
                "provider": name,
                "requests": sum(s.requests for s in rows),
                "tokens": {
                    "prompt": tokens.prompt,
                    "cached_prompt": tokens.cached_prompt,
                    "completion": tokens.completion,
                    "total": tokens.total,
                },
                "cost_usd": float(usd),
                "usd_per_mtok": _f(cost.per_mtok(usd, sum(s.tokens.total for s in priced))),
                "unpriced_models": sorted({s.model for s in rows} - prices.keys()),
                "models": [
                    bring_home(m, [s for s in rows if s.model == m], prices.get(m), owned, span)
                    for m in sorted({s.model for s in rows})
                ],
            }
        )
    return out


def bring_home(
    model: str,
    rows: Sequence[Served],
    price: Price | None,
    owned: NodeCost | None,
    span_s: Fraction | None,
) -> dict[str, Any]:
    """One rented model's tokens priced at the cluster-wide measured amortised and marginal
    $/Mtok (no local model is tied to a rented one, so the cluster's own rates stand in), and
    what serving them here would save a month at the amortised rate (over a bounded window)."""
    tokens = sum((s.tokens for s in rows), Tokens())
    rented_usd = None if price is None else cost.cloud_usd(price, tokens)
    rates = (owned.usd_per_mtok, owned.marginal_usd_per_mtok) if owned else (None, None)
    amortised, marginal = (None if r is None else r * tokens.total / 1_000_000 for r in rates)
    monthly = None
    if rented_usd is not None and amortised is not None and span_s:
        monthly = (rented_usd - amortised) * cost.SECONDS_PER_MONTH / span_s
    return {
        "model": model,
        "requests": sum(s.requests for s in rows),
        "tokens": tokens.total,
        "cost_usd": _f(rented_usd),
        "owned_usd_per_mtok": _f(rates[0]),
        "owned_marginal_usd_per_mtok": _f(rates[1]),
        "at_owned_usd": _f(amortised),
        "at_owned_marginal_usd": _f(marginal),
        "saving_per_month_usd": _f(monthly),
    }


def usage_spend(
    groups: Sequence[dict[str, Any]],
    rented: Sequence[tuple[str | None, Served]],
    provider_prices: Mapping[str, Mapping[str, Price]],
    by: str,
) -> None:
    """Add to each rented usage group (`provider` set) what its tokens cost at the provider's
    list prices (`provider_usd`), and the models it served that have none (not counted)."""
    for g in groups:
        if g["provider"] is None:
            continue
        node = RENTED_PREFIX + g["provider"]
        mine = [s for k, s in rented if k == g[by] and s.node_id == node]
        prices = provider_prices.get(g["provider"], {})
        usd = sum(
            (cost.cloud_usd(prices[s.model], s.tokens) for s in mine if s.model in prices),
            Fraction(0),
        )
        g["provider_usd"] = float(usd)
        g["unpriced_models"] = sorted({s.model for s in mine} - prices.keys())


def model_usd_per_mtok(inputs: CostInputs) -> dict[str, float]:
    """Each model's measured $/Mtok over the window: the $/Mtok of the nodes that served it,
    weighted by the tokens each served of it (a node's cost falls on all its tokens alike)."""
    rates = {
        n: c.usd_per_mtok for n, (c, _) in node_costs(inputs, inputs.window, inputs.since).items()
    }
    usd: dict[str, Fraction] = {}
    tokens: dict[str, int] = {}
    for s in inputs.window.served:
        rate = rates.get(s.node_id)
        if rate is None or not s.tokens.total:
            continue
        usd[s.model] = usd.get(s.model, Fraction(0)) + rate * s.tokens.total
        tokens[s.model] = tokens.get(s.model, 0) + s.tokens.total
    return {m: float(usd[m] / tokens[m]) for m in sorted(usd)}


def figures(
    c: NodeCost, requests: int, price_usd: Fraction, recovered_usd: Fraction, now: datetime
) -> dict[str, Any]:
    """One node's (or the cluster's) figures as JSON numbers."""
    when = cost.breakeven(
        price_usd=price_usd, recovered_usd=recovered_usd, per_day=cost.recovery_per_day(c), now=now
    )
    return {
        "requests": requests,
        "tokens": {
            "prompt": c.tokens.prompt,
            "cached_prompt": c.tokens.cached_prompt,
            "completion": c.tokens.completion,
            "total": c.tokens.total,
        },
        "busy_ratio": _f(c.busy_ratio),
        "busy_s": _f(c.busy_s),
        "observed_s": _f(c.observed_s),
        "owned_s": _f(c.owned_s),
        "energy": {"kwh": _f(c.energy_kwh), "source": c.energy_source},
        "cost_usd": {
            "hardware": _f(c.hardware_usd),
            "energy": _f(c.energy_usd),
            "total": _f(c.total_usd),
        },
        "usd_per_mtok": _f(c.usd_per_mtok),
        "marginal_usd_per_mtok": _f(c.marginal_usd_per_mtok),
        "cloud_equivalent_usd": _f(c.cloud_usd),
        "savings_usd": _f(c.savings_usd),
        "recovered_usd": _f(recovered_usd),
        "paid_off": recovered_usd >= price_usd,
        "breakeven": when.date().isoformat() if when else None,
    }


def prices_json(table: PriceTable, models: Iterable[str]) -> dict[str, Any]:
    """Where the reference prices come from, and which one each model was compared with."""
    return {
        "as_of": table.as_of,
        "origin": table.origin,
        "default": table.default,
        "references": {m: table.reference(m) for m in sorted(models)},
        "table": {
            name: {
                "input": float(p.input),
                "output": float(p.output),
                "cached_input": _f(p.cached_input),
            }
            for name, p in table.prices.items()
        },
    }


def _profile_json(p: CostProfile) -> dict[str, float]:
    return {name: getattr(p, name) for name in COST_FIELDS}


def _f(x: Fraction | None) -> float | None:
    return None if x is None else float(x)


def _iso(t: float | None) -> str | None:
    return None if t is None else datetime.fromtimestamp(t, UTC).isoformat(timespec="seconds")
