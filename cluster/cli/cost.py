"""`cluster cost`, `cluster usage`, `cluster ledger prune` and `cluster nodes set-cost`: thin
calls to the admin API."""

from __future__ import annotations

import argparse
import json
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote, urlencode

from cluster.cli.admin_client import CliError, add_url, admin_get
from cluster.cli.cost_plan import add_plan
from cluster.cli.tables import cost_table, usage_table, visible

_COST_FLAGS = (
    ("--price-usd", "price_usd", "USD", "what the machine cost, in USD"),
    ("--amortize-months", "amortize_months", "MONTHS", "months the price is written off over"),
    ("--idle-watts", "idle_watts", "W", "power drawn when idle, in watts"),
    ("--busy-watts", "busy_watts", "W", "power drawn when generating, in watts"),
    ("--kwh-usd", "kwh_usd", "USD", "electricity price per kWh, in USD"),
)
SINCE_HELP = "window: all, or a number and m, h or d, e.g. 24h, 7d, 30d (default 24h)"


def add_commands(sub: Any) -> None:
    """Register `cost` (and `cost plan`) and `usage`."""
    cost = sub.add_parser(
        "cost",
        help="cost per node, $/Mtok, savings against cloud prices",
        description="Per node and in total: tokens in/out, busy %, cost, $/Mtok "
        "amortised and marginal, cloud-equivalent cost, savings "
        "and the breakeven date.",
    )
    _common(cost)
    cost.set_defaults(func=_cost)
    add_plan(cost)
    usage = sub.add_parser(
        "usage",
        help="requests and tokens per model, node, API key or client",
        description="Requests, outcomes, tokens and mean latencies.",
    )
    _common(usage)
    usage.add_argument(
        "--by",
        choices=["model", "node", "key", "client"],
        default="model",
        help="group by (default model)",
    )
    usage.set_defaults(func=_usage)
    ledger = sub.add_parser("ledger", help="the ledger's retention: prune old rows")
    actions = ledger.add_subparsers(dest="action", metavar="ACTION", required=True)
    prune = actions.add_parser(
        "prune",
        help="fold the rows before a date into hourly sums and delete them",
        description="Fold the requests and node samples of the whole hours before DATE into "
        "hourly sums, then delete them: the ledger stops growing, and `cluster cost` and "
        "`cluster usage` say the same of the pruned time (windows to the hour).",
    )
    prune.add_argument(
        "--before",
        required=True,
        metavar="DATE",
        help="YYYY-MM-DD or an ISO time (UTC unless it names its zone)",
    )
    add_url(prune)
    prune.add_argument("--json", action="store_true", help="print JSON")
    prune.set_defaults(func=_prune)


def add_set_cost(nodes: argparse.ArgumentParser) -> None:
    """Register `nodes set-cost NODE ...` under `nodes`."""
    actions = nodes.add_subparsers(dest="action", metavar="ACTION")
    p = actions.add_parser(
        "set-cost",
        help="set a node's cost profile (wins over its flags)",
        description="Set the fields given of a node's cost profile; the "
        "others keep their current value. Persisted; the admin's "
        "profile wins over the agent's flags.",
    )
    p.add_argument("node", help="node id (or a prefix of it) or name")
    for flag, dest, metavar, text in _COST_FLAGS:
        p.add_argument(flag, dest=dest, type=float, metavar=metavar, help=text)
    add_url(p)
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=_set_cost)


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--since", default="24h", help=SINCE_HELP)
    add_url(p)
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")


def _cost(args: argparse.Namespace) -> int:
    data = admin_get(args.url, "/admin/cost?" + urlencode({"since": args.since}))
    if args.json:
        print(json.dumps(data, indent=2))
    else:
        cost_table(data)
    return 0


def _usage(args: argparse.Namespace) -> int:
    data = admin_get(args.url, "/admin/usage?" + urlencode({"since": args.since, "by": args.by}))
    if args.json:
        print(json.dumps(data, indent=2))
    else:
        usage_table(data)
    return 0


def _prune(args: argparse.Namespace) -> int:
    path = "/admin/ledger/prune?" + urlencode({"before": args.before})
    data = admin_get(args.url, path, method="POST")
    if args.json:
        print(json.dumps(data, indent=2))
    else:
        print(
            f"pruned {data['requests']} requests and {data['samples']} node samples before "
            f"{datetime.fromtimestamp(data['before'], UTC).isoformat()} "
            f"(kept as {data['request_hours']} hourly sums)"
        )
    return 0


def _set_cost(args: argparse.Namespace) -> int:
    changes = {f[1]: getattr(args, f[1]) for f in _COST_FLAGS if getattr(args, f[1]) is not None}
    if not changes:
        raise CliError("give at least one of " + ", ".join(f[0] for f in _COST_FLAGS))
    data = admin_get(args.url, f"/admin/nodes/{quote(args.node, safe='')}/cost", body=changes)
    if args.json:
        print(json.dumps(data, indent=2))
    else:
        profile = ", ".join(f"{k}={v:g}" for k, v in data["profile"].items())
        print(f"{visible(data['node_id'][:12])}: {visible(profile)} (set by the admin)")
    return 0
