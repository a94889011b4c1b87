"""The cloud reference price table: which list prices the ledger compares each local model with.

Shipped as `cluster/ledger/cloud_prices.json` (with the date its prices were taken); a
`cloud_prices.json` in the config dir is merged over it: its prices add to or replace the shipped
ones, its `compare.models` entries come first, and its `compare.default` and `as_of` win.
Prices are strings or numbers in USD per million tokens, read exactly (no float rounding).

    {"as_of": "2025-06-01", "source": "...",
     "prices": {"gpt-4o-mini": {"input": "0.15", "cached_input": "0.075", "output": "0.60"}},
     "compare": {"default": "gpt-4o-mini", "models": {"llama-3.3-70b*": "gpt-4o"}}}

`compare.models` maps a local model name (or an fnmatch pattern) to a reference model; any model
that matches none is compared with `compare.default`.
"""

from __future__ import annotations

import fnmatch
import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from fractions import Fraction
from importlib import resources
from pathlib import Path
from typing import Any

from cluster.ledger.cost import Price

logger = logging.getLogger(__name__)

FILE_NAME = "cloud_prices.json"


class PriceTableError(ValueError):
    """A price table that cannot be used, with what is wrong in it."""


@dataclass(frozen=True, kw_only=True)
class PriceTable:
    """List prices of a few cloud models and which one each local model is compared with."""

    as_of: str
    source: str
    prices: Mapping[str, Price]
    default: str
    compare: tuple[tuple[str, str], ...]  # (local model or pattern, reference), first match wins
    origin: str = "shipped"  # "shipped", or the override file's path

    def reference(self, model: str) -> str:
        """The cloud model `model`'s tokens are priced at."""
        for pattern, ref in self.compare:
            if model == pattern or fnmatch.fnmatchcase(model, pattern):
                return ref
        return self.default

    def price(self, model: str) -> Price:
        """The reference prices for a local model."""
        return self.prices[self.reference(model)]


def shipped() -> dict[str, Any]:
    """The price table that ships with meterless, as raw JSON."""
    text = resources.files("cluster.ledger").joinpath(FILE_NAME).read_text()
    return _loads(text)


def load(config_dir: Path | None) -> PriceTable:
    """The shipped table with `<config_dir>/cloud_prices.json` merged over it, if present.

    An override that cannot be read or used is logged and ignored: a typo in a price file must
    not keep the controller from starting.
    """
    table = parse(shipped())
    path = config_dir / FILE_NAME if config_dir else None
    if path is None or not path.exists():
        return table
    try:
        return parse(merge(shipped(), _loads(path.read_text())), origin=str(path))
    except (OSError, ValueError) as exc:
        logger.error("ignoring %s: %s", path, exc)
        return table


def merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """`override` over `base`: prices by model, compare.models first, scalars replaced."""
    out = {**base, **{k: v for k, v in override.items() if k not in ("prices", "compare")}}
    out["prices"] = {**base.get("prices", {}), **override.get("prices", {})}
    base_cmp, over_cmp = base.get("compare", {}), override.get("compare", {})
    models = dict(over_cmp.get("models", {}))
    models.update((k, v) for k, v in base_cmp.get("models", {}).items() if k not in models)
    out["compare"] = {"default": over_cmp.get("default", base_cmp.get("default")), "models": models}
    return out


def parse(raw: Mapping[str, Any], *, origin: str = "shipped") -> PriceTable:
    """A PriceTable from raw JSON; raises PriceTableError naming what is wrong."""
    try:
        prices = {str(name): _price(p) for name, p in raw["prices"].items()}
        compare = raw.get("compare", {})
        default = str(compare["default"])
        pairs = tuple((str(k), str(v)) for k, v in compare.get("models", {}).items())
    except (KeyError, TypeError, AttributeError, ValueError, ZeroDivisionError) as exc:
        raise PriceTableError(f"malformed price table ({type(exc).__name__}: {exc})") from None
    unknown = sorted({default, *(ref for _, ref in pairs)} - prices.keys())
    if unknown:
        raise PriceTableError(f"reference models without prices: {', '.join(unknown)}")
    return PriceTable(
        as_of=str(raw.get("as_of", "")),
        source=str(raw.get("source", "")),
        prices=prices,
        default=default,
        compare=pairs,
        origin=origin,
    )


def _price(p: Mapping[str, Any]) -> Price:
    cached = p.get("cached_input")
    price = Price(
        input=_usd(p["input"]),
        output=_usd(p["output"]),
        cached_input=None if cached is None else _usd(cached),
    )
    if min(price.input, price.output, price.cached_input or 0) < 0:
        raise ValueError("negative price")
    return price


def _usd(value: Any) -> Fraction:
    if isinstance(value, bool) or not isinstance(value, str | int | Fraction):
        raise ValueError(f"not a price: {value!r}")
    return Fraction(value)


def _loads(text: str) -> dict[str, Any]:
    data = json.loads(text, parse_float=Fraction)  # "0.15" and 0.15 both mean 3/20 exactly
    if not isinstance(data, dict):
        raise PriceTableError("a price table is a JSON object")
    return data
