"""What a provider is, and the checks on the admin's words for one. Pure: no files, no network.

A provider is a named cloud endpoint of one dialect (`openai` or `anthropic`) with its own list
prices per remote model. Its key is not part of it: keys live apart (cluster/providers/store.py),
so that a Provider can be printed, logged or sent anywhere without leaking one.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any
from urllib.parse import urlsplit

from cluster.ledger.cost import Price

KINDS = ("openai", "anthropic")
_NAME = re.compile(
    r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
)  # also a file name: no slashes, no dots first
_DECIMAL = re.compile(r"^\d+(\.\d+)?$")


class ProviderError(ValueError):
    """Words that do not describe a provider; the message is one line, fit for the CLI."""


@dataclass(frozen=True, kw_only=True)
class Provider:
    """A cloud endpoint the cluster may rent from: name, dialect, base URL and list prices."""

    name: str
    kind: str
    base_url: str
    prices: Mapping[str, Price] = field(default_factory=dict)  # remote model -> USD per Mtok


def check_name(name: str) -> str:
    """`name` if it can name a provider (and its key file)."""
    if not _NAME.match(name):
        raise ProviderError(
            f"{name!r} cannot name a provider: use letters, digits, '.', '_' and '-' "
            "(64 at most), starting with a letter or digit"
        )
    return name


def check_kind(kind: str) -> str:
    """`kind` if meterless speaks that provider dialect."""
    if kind not in KINDS:
        raise ProviderError(f"unknown kind {kind!r}; known: {', '.join(KINDS)}")
    return kind


def check_base_url(url: str) -> str:
    """The base URL without a trailing slash, if it is http(s) with a host and no credentials.

    Credentials in a URL would be printed with it; the key belongs in the key file.
    """
    try:
        parts = urlsplit(url.strip())
        parts.port  # noqa: B018 - raises ValueError on a port that is not a number
    except ValueError:
        raise ProviderError(f"bad base URL {url!r}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ProviderError(f"bad base URL {url!r}: give http(s)://HOST[:PORT][/PATH]")
    if parts.username is not None or parts.password is not None:
        raise ProviderError("the base URL must not carry credentials; give the key with --key-file")
    if parts.query or parts.fragment:
        raise ProviderError(f"bad base URL {url!r}: no query or fragment")
    return url.strip().rstrip("/")


def parse_price(text: str) -> tuple[str, Price]:
    """`MODEL=IN,OUT[,CACHED]` (USD per million tokens, decimals) as (model, exact Price)."""
    model, sep, numbers = text.partition("=")
    parts = numbers.split(",")
    if not sep or not model.strip() or len(parts) not in (2, 3):
        raise ProviderError(f"bad price {text!r}: give MODEL=IN,OUT[,CACHED] in USD per Mtok")
    bad = [p for p in parts if not _DECIMAL.match(p.strip())]
    if bad:
        raise ProviderError(f"bad price {text!r}: {bad[0]!r} is not a number of USD (e.g. 0.15)")
    usd = [Fraction(p.strip()) for p in parts]
    cached = usd[2] if len(usd) == 3 else None
    return model.strip(), Price(input=usd[0], output=usd[1], cached_input=cached)


def check_key(key: str, source: str) -> str:
    """The key without surrounding whitespace, if it can travel in an HTTP header."""
    key = key.strip()
    if not key:
        raise ProviderError(f"{source} holds no key")
    if any(c.isspace() or not c.isprintable() for c in key):
        raise ProviderError(f"{source} holds more than one line or spaces; give just the key")
    return key


def provider_json(p: Provider, *, key_set: bool) -> dict[str, Any]:
    """A provider as JSON: whether a key is set, never the key."""
    return {
        "name": p.name,
        "kind": p.kind,
        "base_url": p.base_url,
        "key_set": key_set,
        "prices": {m: price_json(price) for m, price in sorted(p.prices.items())},
    }


def price_json(price: Price) -> dict[str, str | None]:
    """Exact prices as decimal strings (the way the price table is written)."""
    cached = price.cached_input
    return {
        "input": decimal(price.input),
        "output": decimal(price.output),
        "cached_input": None if cached is None else decimal(cached),
    }


def decimal(x: Fraction) -> str:
    """A Fraction read from a decimal, written back as that decimal (`3/20` -> `0.15`)."""
    whole, rest = divmod(x, 1)
    if rest == 0:
        return str(whole)
    digits = 0
    while (rest * 10**digits).denominator != 1:
        digits += 1
        if digits > 30:
            return str(float(x))
    return f"{whole}.{int(rest * 10**digits):0{digits}d}"


def from_json(data: Mapping[str, Any]) -> Provider:
    """A provider from its stored JSON (as provider_json writes it)."""
    prices = {
        str(m): Price(
            input=Fraction(p["input"]),
            output=Fraction(p["output"]),
            cached_input=None if p.get("cached_input") is None else Fraction(p["cached_input"]),
        )
        for m, p in data.get("prices", {}).items()
    }
    return Provider(
        name=check_name(str(data["name"])),
        kind=check_kind(str(data["kind"])),
        base_url=check_base_url(str(data["base_url"])),
        prices=prices,
    )


DEFAULT_OVERFLOW_WAIT_S = 2.0  # how long a request may wait for a local node before it is rented


@dataclass(frozen=True, kw_only=True)
class Route:
    """A model the cluster offers by renting it: requests for `model` go to `provider`, asking
    it for `remote_model` -- all of them, or with `overflow_wait_s` set, only those no local
    node can start within that many seconds (or serve at all)."""

    model: str
    provider: str
    remote_model: str
    overflow_wait_s: float | None = None

    @property
    def overflow(self) -> bool:
        """Whether local nodes come first (`cluster route MODEL --overflow`)."""
        return self.overflow_wait_s is not None


ROUTABLE_KINDS = ("openai", "anthropic")  # the dialects the gateway can forward to


def parse_target(model: str, target: str, overflow_wait_s: float | None = None) -> Route:
    """`PROVIDER[:REMOTE_MODEL]` for `model` (the remote model defaults to the same name); an
    overflow route when `overflow_wait_s` is given."""
    provider, _, remote = target.partition(":")
    if not model.strip():
        raise ProviderError("which model? cluster route MODEL --to PROVIDER[:REMOTE_MODEL]")
    if overflow_wait_s is not None and not 0 <= overflow_wait_s <= 3600:
        raise ProviderError(f"bad overflow wait {overflow_wait_s:g}: give 0 to 3600 seconds")
    return Route(
        model=model,
        provider=check_name(provider),
        remote_model=remote or model,
        overflow_wait_s=overflow_wait_s,
    )


def check_route(route: Route, providers: list[Provider]) -> Route:
    """`route` if its provider exists and is of a kind the gateway forwards to."""
    found = {p.name: p for p in providers}
    provider = found.get(route.provider)
    if provider is None:
        known = ", ".join(found) or "none; add one with `cluster providers add`"
        raise ProviderError(f"no provider named {route.provider!r}; providers: {known}")
    if provider.kind not in ROUTABLE_KINDS:
        raise ProviderError(
            f"{provider.name}'s kind is {provider.kind}; only {', '.join(ROUTABLE_KINDS)} "
            "providers can be routed to so far"
        )
    return route


def route_json(r: Route) -> dict[str, Any]:
    """A route as JSON (`overflow_wait_s` only on an overflow route)."""
    row: dict[str, Any] = {"model": r.model, "provider": r.provider, "remote_model": r.remote_model}
    if r.overflow_wait_s is not None:
        row["overflow_wait_s"] = r.overflow_wait_s
    return row


def route_from_json(data: Mapping[str, Any]) -> Route:
    """A route from its stored JSON (as route_json writes it)."""
    wait = data.get("overflow_wait_s")
    return Route(
        model=str(data["model"]),
        provider=str(data["provider"]),
        remote_model=str(data["remote_model"]),
        overflow_wait_s=None if wait is None else float(wait),
    )
