"""Rich tables for `cluster cost` and `cluster usage`; the JSON they render is the admin API's."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from rich.console import Console
from rich.table import Table

# The figures of one usage group, in the order `cluster usage` shows them.
_USAGE_COLUMNS = (
    "requests",
    "ok",
    "failed-over",
    "cancelled",
    "error",
    "prompt",
    "cached",
    "completion",
    "ttft s",
    "node ttft s",
    "duration s",
)
# The figures of one node in `cluster cost`, between its name and its breakeven and energy source.
_COST_FIGURES = (
    "tok in",
    "tok out",
    "busy %",
    "cost $",
    "$/Mtok",
    "marginal $/Mtok",
    "cloud $",
    "savings $",
)
_RIGHT = {*_COST_FIGURES, *_USAGE_COLUMNS}


def money(x: float | None, digits: int = 2) -> str:
    """USD with `digits` decimals, or - for none."""
    return "-" if x is None else f"{x:,.{digits}f}"


def count(n: int | None) -> str:
    """An integer with thousands separators."""
    return f"{n or 0:,}"


def cost_table(data: Mapping[str, Any], console: Console | None = None) -> None:
    """Print one row per node and the cluster's total."""
    table = Table(title=f"cost since {data['since']}")
    for col in ("node", *_COST_FIGURES, "breakeven", "energy"):
        table.add_column(col, justify="right" if col in _RIGHT else "left")
    for n in data["nodes"]:
        table.add_row(n["name"], *_figures(n))
    table.add_row("[b]total[/b]", *_figures(data["total"]))
    out = console or Console()
    out.print(table)
    p = data["prices"]
    refs = ", ".join(f"{m} ~ {r}" for m, r in p["references"].items()) or f"~ {p['default']}"
    out.print(f"cloud prices as of {p['as_of']} ({p['origin']}): {refs}")


def _figures(n: Mapping[str, Any]) -> list[str]:
    busy = "-" if n["busy_ratio"] is None else f"{100 * n['busy_ratio']:.1f}"
    when = "paid off" if n["paid_off"] else n["breakeven"] or "never"
    return [
        count(n["tokens"]["prompt"]),
        count(n["tokens"]["completion"]),
        busy,
        money(n["cost_usd"]["total"]),
        money(n["usd_per_mtok"], 3),
        money(n["marginal_usd_per_mtok"], 3),
        money(n["cloud_equivalent_usd"]),
        money(n["savings_usd"]),
        when,
        n["energy"]["source"],
    ]


def usage_table(data: Mapping[str, Any], console: Console | None = None) -> None:
    """Print one row per group."""
    by = data["by"]
    table = Table(title=f"usage by {by} since {data['since']}")
    for col in (by, *_USAGE_COLUMNS):
        table.add_column(col, justify="right" if col in _RIGHT else "left")
    for g in data["groups"]:
        table.add_row(
            _group(g, by),
            count(g["requests"]),
            count(g["ok"]),
            count(g["failed_over"]),
            count(g["cancelled"]),
            count(g["error"]),
            count(g["prompt_tokens"]),
            count(g["cached_prompt_tokens"]),
            count(g["completion_tokens"]),
            money(g["mean_ttft_s"], 3),
            money(g["mean_node_ttft_s"], 3),
            money(g["mean_duration_s"], 3),
        )
    (console or Console()).print(table)


def _group(g: Mapping[str, Any], by: str) -> str:
    """The group's label: a key shows its name beside its id ("-": requests without a key)."""
    if g[by] is None:
        return "-"
    return f"{g['name']} ({g[by]})" if g.get("name") else str(g[by])
