"""Rich tables for the CLI's listings; the JSON they render is the admin API's, unchanged."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from rich.console import Console
from rich.table import Table

_STATE_STYLE = {
    "ready": "green",
    "joining": "yellow",
    "draining": "cyan",
    "lost": "red",
    "rejected": "bold red",
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
        table.add_row(
            n["node_id"][:12],
            n["name"],
            n["address"],
            ",".join(n["engines"]),
            f"[{style}]{n['state']}[/{style}]" if style else n["state"],
            f"{gib(n['memory_used_bytes'])}/{gib(n['memory_total_bytes'])}",
            ", ".join(n["models"]) or "-",
            str(n["running"] + n["waiting"]),
            tps,
        )
    (console or Console()).print(table)
    if any(not n["tps_measured"] for n in nodes):
        (console or Console()).print("* not measured yet: the starting estimate")
    for n in nodes:
        if n.get("reason"):  # a rejected node: say why, it is never sent a request
            (console or Console()).print(
                f"rejected {n['name']} ({n['address']}): {n['reason']}",
                markup=False,
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
        table.add_row(
            m["model"],
            desired,
            ", ".join(m["ready_nodes"]) or "-",
            ", ".join(m["nodes"]) or "-",
            "\n".join(replicas) or "-",
        )
    (console or Console()).print(table)
