"""`cluster deploy | undeploy | rebalance | drain | uncordon`: thin calls to the admin API.

Commands that change the cluster wait (unless --no-wait) and show what the controller is
doing: a progress bar per replica, fed by the agents' LoadModel progress.
"""

from __future__ import annotations

import argparse
import functools
import json
import time
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import quote, urlencode

from rich.progress import BarColumn, Progress, TextColumn
from rich.table import Table

from cluster.cli.admin_client import CliError, add_url, admin_get
from cluster.cli.tables import add_row, literal, show, visible
from cluster.deployments.placement import human
from node_agent.engines.parsing import tool_parser_families

POLL_S = 0.5
STUCK_S = 10.0  # a drain whose replica has had no node for this long is reported, not awaited
DONE = ("ready",)


def add_commands(sub: Any) -> None:
    """Register deploy, undeploy, rebalance, drain and uncordon."""
    p = sub.add_parser(
        "deploy",
        help="run a model on the cluster, placed where it fits",
        description="Deploy MODEL (a model directory, a hub id, or demo): the controller places "
        "its replicas (weights + KV cache for the context x concurrency + engine overhead, "
        "within each node's memory budget; nodes that have it on disk first), loads them, "
        "and keeps them loaded across restarts.",
    )
    p.add_argument("model", help="a model directory, a hub id (org/name), or demo")
    p.add_argument("--name", help="the name clients ask for (default: MODEL)")
    p.add_argument("--replicas", type=int, default=1, help="how many nodes serve it (default 1)")
    p.add_argument(
        "--node",
        action="append",
        default=[],
        metavar="NODE",
        help="only on this node (name or id prefix); repeatable",
    )
    p.add_argument("--engine", choices=["mlx", "vllm"], help="engine (default: any)")
    p.add_argument(
        "--context",
        type=int,
        default=0,
        metavar="N",
        help="context length to load with (default: the model's own)",
    )
    p.add_argument(
        "--concurrency",
        type=int,
        default=1,
        metavar="N",
        help="requests expected at once per replica; sizes the KV cache (default 1)",
    )
    p.add_argument(
        "--tool-parser",
        default="",
        metavar="NAME",
        help="how the model's tool calls are parsed: a family ("
        + (", ".join(tool_parser_families()) or "mlx-lm's tool_parsers")
        + "; hermes is json_tools), none (no tool calls: clients cannot send tools), or "
        "empty for the family the model's tokenizer implies (default)",
    )
    p.add_argument("--dry-run", action="store_true", help="show the placement, change nothing")
    _common(p, wait=True)
    p.set_defaults(func=_deploy)

    p = sub.add_parser(
        "undeploy",
        help="unload a deployed model everywhere",
        description="Unload every replica of MODEL and forget its deployment.",
    )
    p.add_argument("model", help="the deployed name")
    _common(p, wait=True)
    p.set_defaults(func=_undeploy)

    p = sub.add_parser(
        "rebalance",
        help="move replicas toward where demand is",
        description="From the ledger's recent demand per model and each node's measured "
        "throughput, move the busiest models to the fastest nodes (idle ones give memory "
        "back). New replicas load first; old ones unload once the new ones serve.",
    )
    p.add_argument("--since", default="1h", help="demand window, e.g. 15m, 1h, 24h (default 1h)")
    p.add_argument("--dry-run", action="store_true", help="show the moves, change nothing")
    _common(p, wait=True)
    p.set_defaults(func=_rebalance)

    for name, text in (
        (
            "drain",
            "place a node's replicas elsewhere, then stop routing to it; requests in flight finish",
        ),
        ("uncordon", "let a drained node take replicas and requests again"),
    ):
        p = sub.add_parser(name, help=text, description=text[0].upper() + text[1:] + ".")
        p.add_argument("node", help="node name or id prefix")
        _common(p, wait=name == "drain")
        p.set_defaults(func=_drain if name == "drain" else _uncordon)


def _common(p: argparse.ArgumentParser, *, wait: bool) -> None:
    add_url(p)
    p.add_argument("--json", action="store_true", help="print the API's JSON answer")
    if wait:
        p.add_argument("--no-wait", action="store_true", help="return once the change is accepted")
        p.add_argument(
            "--timeout",
            type=float,
            default=600.0,
            metavar="S",
            help="give up waiting after S seconds (default 600)",
        )


def _deploy(args: argparse.Namespace) -> int:
    body = {
        "model": args.model,
        "name": args.name or args.model,
        "replicas": args.replicas,
        "nodes": args.node,
        "engine": args.engine or "",
        "context_length": args.context,
        "concurrency": args.concurrency,
        "tool_parser": args.tool_parser,
        "dry_run": args.dry_run,
    }
    answer = admin_get(args.url, "/admin/deployments", body)
    if args.json:
        print(json.dumps(answer, indent=2))
    else:
        _placement_table(answer)
    if args.dry_run or args.no_wait:
        return 0
    return _wait_replicas(args, answer["model"], quiet=args.json)


def _undeploy(args: argparse.Namespace) -> int:
    answer = admin_get(args.url, "/admin/undeploy", {"model": args.model})
    if args.json:
        print(json.dumps(answer, indent=2))
    if args.no_wait:
        return 0
    _until(args, lambda: not _listed(args.url, args.model), f"{args.model} to unload")
    if not args.json:
        print(f"{args.model}: undeployed")
    return 0


def _rebalance(args: argparse.Namespace) -> int:
    query = urlencode({"since": args.since, "dry_run": str(args.dry_run).lower()})
    answer = admin_get(args.url, f"/admin/rebalance?{query}", {})
    if args.json:
        print(json.dumps(answer, indent=2))
    else:
        _moves_table(answer)
    if args.dry_run or args.no_wait or not answer["moves"]:
        return 0
    for move in answer["moves"]:
        _until(args, functools.partial(_moved, args.url, move), f"{move['model']} to move")
        if not args.json:
            model, source, target = (visible(move[k]) for k in ("model", "from", "to"))
            print(f"{model}: moved from {source} to {target}")
    return 0


def _drain(args: argparse.Namespace) -> int:
    answer = admin_get(args.url, f"/admin/nodes/{quote(args.node, safe='')}/drain", {})
    name = answer["node"]["name"]
    if not args.no_wait:
        started = time.monotonic()
        _until(args, lambda: _drained(args.url, name, started), f"{name}'s replicas to move")
    if args.json:
        print(json.dumps(answer, indent=2))
    else:
        print(f"{visible(name)}: draining; it takes no new requests and holds no deployed replica")
    return 0


def _uncordon(args: argparse.Namespace) -> int:
    answer = admin_get(args.url, f"/admin/nodes/{quote(args.node, safe='')}/uncordon", {})
    if args.json:
        print(json.dumps(answer, indent=2))
    else:
        print(f"{visible(answer['node']['name'])}: {visible(answer['node']['state'])}")
    return 0


# -- waiting -------------------------------------------------------------------------------


def _model(url: str, name: str) -> dict[str, Any] | None:
    """The deployed model called `name` in /admin/models, if deployed."""
    models = admin_get(url, "/admin/models")["models"]
    return next((m for m in models if m["model"] == name and m.get("desired")), None)


def _listed(url: str, name: str) -> bool:
    """Whether /admin/models still lists `name` (deployed, or loaded anywhere)."""
    return any(m["model"] == name for m in admin_get(url, "/admin/models")["models"])


def _moved(url: str, move: Mapping[str, str]) -> bool:
    m = _model(url, move["model"])
    states = {r["node"]: r["state"] for r in (m or {}).get("replicas", [])}
    return states.get(move["to"]) == "ready" and move["from"] not in states


def _drained(url: str, node: str, started: float) -> bool:
    """Whether the node is draining and holds no deployed replica; raises if it never will."""
    nodes = {n["name"]: n for n in admin_get(url, "/admin/nodes")["nodes"]}
    models = admin_get(url, "/admin/models")["models"]
    holding = [
        m
        for m in models
        if m.get("desired") is not None and any(r["node"] == node for r in m.get("replicas", []))
    ]
    for m in holding:  # a replica with nowhere to go, and nothing loading anywhere for it
        here = [r for r in m["replicas"] if r["node"] == node]
        leaving = all(r["state"] in ("withdrawn", "unloading") for r in here)
        loading = any(r["state"] == "loading" for r in m["replicas"])
        stuck = m.get("unplaced") and not loading and not leaving
        if stuck and time.monotonic() - started > STUCK_S:
            raise CliError(
                f"{node} is cordoned, but {m['model']} has nowhere else to go "
                f"({m['unplaced'][0]['reason']}); it keeps serving there until a "
                "node has room (`cluster uncordon` undoes the drain)"
            )
    return nodes.get(node, {}).get("state") == "draining" and not holding


def _until(args: argparse.Namespace, done: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + args.timeout
    while not done():
        if time.monotonic() > deadline:
            raise CliError(f"gave up after {args.timeout:.0f}s waiting for {what}")
        time.sleep(POLL_S)


def _wait_replicas(args: argparse.Namespace, name: str, *, quiet: bool) -> int:
    """A progress bar per replica until every placed one is ready; 1 on a crash loop."""
    deadline = time.monotonic() + args.timeout
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.fields[msg]}"),
        disable=quiet,
    ) as bars:
        tasks: dict[str, Any] = {}
        while True:
            m = _model(args.url, name) or {}
            for r in m.get("replicas", []):
                if r["node"] not in tasks:
                    tasks[r["node"]] = bars.add_task(f"{name} on {r['node']}", total=1.0, msg="")
                total = r["bytes_total"] or 1
                done = 1.0 if r["state"] == "ready" else (r["bytes_done"] / total) * 0.9
                bars.update(
                    tasks[r["node"]],
                    completed=done,
                    msg=f"{r['state']}: {r['message'] or r['stage']}"[:70],
                )
            if m.get("crash_loops"):
                loop = m["crash_loops"][0]
                raise CliError(
                    f"{name} keeps failing to load on {loop['node']} "
                    f"({loop['failures']} tries): {loop['reason']}"
                )
            replicas = m.get("replicas", [])
            if (
                replicas
                and sum(r["state"] in DONE for r in replicas)
                >= min(m.get("desired", 1), len(replicas))
                and not m.get("unplaced")
            ):
                break
            if m.get("unplaced") and replicas and all(r["state"] in DONE for r in replicas):
                break
            if time.monotonic() > deadline:
                raise CliError(f"gave up after {args.timeout:.0f}s waiting for {name} to load")
            time.sleep(POLL_S)
    if not quiet:
        print(f"{visible(name)}: {m.get('ready', 0)} of {m.get('desired')} replicas ready")
    return 0


# -- tables --------------------------------------------------------------------------------


def _placement_table(answer: Mapping[str, Any]) -> None:
    title = f"{answer['model']}: placement" + (" (dry run)" if answer["dry_run"] else "")
    table = Table(title=literal(title))
    for col in ("replica", "node", "needs", "on disk"):
        table.add_column(col)
    for i, r in enumerate(answer["placement"], 1):
        disk = "yes" if r["on_disk"] else "no"
        add_row(table, i, r["node"], human(r["estimate_bytes"]), disk)
    for u in answer["unplaced"]:
        add_row(table, u["replica"], "-", "-", f"not placed: {u['reason']}")
    show(table)


def _moves_table(answer: Mapping[str, Any]) -> None:
    if not answer["moves"]:
        since = visible(answer["since"])
        print(f"nothing to move: placement already follows demand over {since}")
        return
    table = Table(title="rebalance" + (" (dry run)" if answer["dry_run"] else ""))
    for col in ("model", "from", "to", "why"):
        table.add_column(col)
    for m in answer["moves"]:
        add_row(table, m["model"], m["from"], m["to"], m["reason"])
    show(table)
