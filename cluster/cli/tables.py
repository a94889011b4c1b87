"""Rich tables for the CLI's listings; the JSON they render is the admin API's, unchanged.

Piped or redirected, a table is as wide as its cells need: nothing is cut to 80 columns.
Every value from the head is shown literally (`literal`): node names come from whoever runs an
agent and model names from any client, so neither may reach the admin's terminal as Rich markup
or as escape sequences.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

PIPED_WIDTH = 1_000  # the most columns a table may take when stdout is not a terminal


def cli_console() -> Console:
    """The CLI's console: the terminal's width, or room for every cell when piped."""
    out = Console()
    return out if out.is_terminal else Console(width=PIPED_WIDTH)


def show(table: Table, console: Console | None = None) -> None:
    """Print a table; piped, at the width its cells need, so that nothing is cut or padded."""
    out = console or cli_console()
    if console is None and not out.is_terminal:
        out = Console(width=out.measure(table).maximum)
    out.print(table)


# C0 and C1 controls (ESC and CSI start terminal sequences, OSC sets titles and links) and the
# bidirectional overrides that make a name read differently from what it is.
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def visible(text: str) -> str:
    """`text` with each control character written as its escape (ESC as `\\x1b`)."""
    return _UNSAFE.sub(lambda m: _escape(m.group()), text)


def _escape(char: str) -> str:
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def literal(value: object) -> Text:
    """A cell that shows `value` as it is: no markup interpreted, no control character sent."""
    return value if isinstance(value, Text) else Text(visible(str(value)))


def add_row(table: Table, *cells: object) -> None:
    """Add a row of literal cells (a Text passes as it is, with its own style)."""
    table.add_row(*(literal(c) for c in cells))


_STATE_STYLE = {
    "ready": "green",
    "joining": "yellow",
    "draining": "cyan",
    "lost": "red",
    "rejected": "bold red",
    "incompatible": "bold magenta",
}


def gib(n: float) -> str:
    """Bytes as GiB with one decimal."""
    return f"{n / 2**30:.1f}"


def nodes_table(nodes: Sequence[Mapping[str, Any]], console: Console | None = None) -> None:
    """Print one row per node."""
    table = Table(title="nodes")
    for col in (
        "node",
        "name",
        "address",
        "engine",
        "version",
        "state",
        "mem GiB used/total",
        "models",
        "running",
        "tok/s",
    ):
        table.add_column(col, justify="right" if col in ("running", "tok/s") else "left")
    for n in nodes:
        style = _STATE_STYLE.get(n["state"], "")
        tps = f"{n['decode_tps']:.1f}" + ("" if n["tps_measured"] else "*")
        add_row(
            table,
            n["node_id"][:12],
            n["name"],
            n["address"],
            ",".join(n["engines"]),
            n.get("agent_version") or "-",  # absent from an older head's JSON
            Text(visible(n["state"]), style=style),
            f"{gib(n['memory_used_bytes'])}/{gib(n['memory_total_bytes'])}",
            ", ".join(n["models"]) or "-",
            str(n["running"] + n["waiting"]),
            tps,
        )
    show(table, console)
    if any(not n["tps_measured"] for n in nodes):
        (console or cli_console()).print("* not measured yet: the starting estimate")
    for n in nodes:
        if n.get("reason"):  # rejected or incompatible: say why, it is never sent a request
            (console or cli_console()).print(
                visible(f"{n['state']} {n['name']} ({n['address']}): {n['reason']}"),
                markup=False,
                highlight=False,
                soft_wrap=True,
            )


def models_table(models: Sequence[Mapping[str, Any]], console: Console | None = None) -> None:
    """Print one row per model."""
    table = Table(title="models")
    for col in ("model", "desired", "ready nodes", "all nodes", "replicas"):
        table.add_column(col)
    for m in models:
        desired = "-" if m.get("desired") is None else str(m["desired"])
        replicas = [f"{r['node']}: {r['state']}" for r in m.get("replicas", [])]
        replicas += [f"not placed: {u['reason']}" for u in m.get("unplaced", [])]
        replicas += [
            f"{c['node']}: stopped after {c['failures']} failed loads: {c['reason']}"
            for c in m.get("crash_loops", [])
        ]
        parser = (m.get("spec") or {}).get("tool_parser")
        table.add_row(
            Text("\n").join(literal(line) for line in (m["model"], *tool_parser(parser))),
            literal(desired),
            literal(", ".join(m["ready_nodes"]) or "-"),
            literal(", ".join(m["nodes"]) or "-"),
            Text("\n").join(literal(line) for line in replicas or ["-"]),
        )
    show(table, console)


def tool_parser(parser: str | None) -> list[str]:
    """The line under a model's name that names its tool parser, if the spec sets one."""
    return [f"tool parser: {parser}"] if parser else []


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
    "tools",
    "constrained",
    "reasoning",
    "provider $",
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
    table = Table(title=literal(f"cost since {data['since']}"))
    for col in ("node", *_COST_FIGURES, "breakeven", "energy"):
        table.add_column(col, justify="right" if col in _RIGHT else "left")
    for n in data["nodes"]:
        add_row(table, n["name"], *_figures(n))
    add_row(table, Text("total", style="bold"), *_figures(data["total"]))
    out = console or cli_console()
    show(table, console)
    p = data["prices"]
    refs = ", ".join(f"{m} ~ {r}" for m, r in p["references"].items()) or f"~ {p['default']}"
    out.print(visible(f"cloud prices as of {p['as_of']} ({p['origin']}): {refs}"), markup=False)
    for r in data.get("rented", []):
        t = r["tokens"]
        line = (
            f"rented from {r['provider']}: {r['requests']} requests, {count(t['prompt'])} in, "
            f"{count(t['completion'])} out, ${money(r['cost_usd'], 4)} at its prices"
        )
        if r["unpriced_models"]:
            line += f" (no price for {', '.join(r['unpriced_models'])}: not counted)"
        out.print(visible(line), markup=False)
        for m in r.get("models", []):
            out.print(visible(f"  {m['model']}: {bring_home_line(m)}"), markup=False)


def bring_home_line(m: Mapping[str, Any]) -> str:
    """What a rented model's tokens would have cost here, and the saving a month."""
    if m["owned_usd_per_mtok"] is None:
        return "no local $/Mtok measured yet to compare with"
    line = (
        f"the same {count(m['tokens'])} tokens here would cost ${money(m['at_owned_usd'], 4)} "
        f"amortised, ${money(m['at_owned_marginal_usd'], 4)} marginal (at the cluster-wide "
        f"${money(m['owned_usd_per_mtok'], 3)} and ${money(m['owned_marginal_usd_per_mtok'], 3)}"
        "/Mtok: no local model is tied to a rented one)"
    )
    saving = m["saving_per_month_usd"]
    if saving is None:
        return line + ("" if m["cost_usd"] is None else "; ask for a window (--since) for a month")
    if saving <= 0:
        return line + f"; renting is cheaper by ${money(-saving)} a month"
    return line + f"; bring this home and save ${money(saving)} a month"


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
    table = Table(title=literal(f"usage by {by} since {data['since']}"))
    for col in (by, *_USAGE_COLUMNS):
        table.add_column(col, justify="right" if col in _RIGHT else "left")
    for g in data["groups"]:
        add_row(
            table,
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
            *(count(g.get(f"with_{f}")) for f in ("tools", "constrained", "reasoning")),
            _spend(g),
        )
    show(table, console)


def _group(g: Mapping[str, Any], by: str) -> str:
    """The group's label: a key shows its name beside its id ("-": requests without a key);
    requests a provider served say which, beside the same group's own."""
    label = "-" if g[by] is None else f"{g['name']} ({g[by]})" if g.get("name") else str(g[by])
    provider = g.get("provider")
    return label if provider is None or by == "node" else f"{label}, rented from {provider}"


def _spend(g: Mapping[str, Any]) -> str:
    """A rented group's spend at its provider's prices ("+?": some models have no price)."""
    if g.get("provider_usd") is None:
        return "-"
    return money(g["provider_usd"], 4) + (" +?" if g.get("unpriced_models") else "")
