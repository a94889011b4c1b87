"""`cluster alias NAME MODEL`, `cluster alias rm NAME`, `cluster aliases`: thin calls to the
admin API."""

from __future__ import annotations

import argparse
import json
from typing import Any
from urllib.parse import quote

from cluster.cli.admin_client import CliError, add_url, admin_get
from cluster.cli.tables import visible

EXAMPLES = """\
Clients ask for the models they know: Claude Code for `claude-...` names, Codex for `gpt-...`
names. An alias is another name for a model the cluster serves, so they reach local ones.
NAME is an exact name or a glob (`*`, `?`, `[...]`; quote it for the shell). A model the
cluster serves always answers to its own name; otherwise an exact alias wins, then the glob
with the most literal characters. Answers carry the name the client asked for; the ledger
keeps both. Aliases resolve one level only: MODEL is always a model, never another alias.

examples:
  cluster alias 'claude-*-haiku*' small-model   # Claude Code's fast model, to a small one
  cluster alias 'claude-*' big-model            # every other claude-... name
  cluster alias 'gpt-*' demo                    # Codex's models, to the demo model
  cluster alias claude-haiku demo               # one exact name (listed in /v1/models)
  cluster alias rm 'gpt-*'                      # forget an alias
  cluster aliases                               # list them, in the order they are tried
"""


def add_commands(sub: Any) -> None:
    """Register `alias` and `aliases`."""
    alias = sub.add_parser(
        "alias",
        usage="%(prog)s [--url URL] [--json] NAME MODEL\n"
        "       %(prog)s [--url URL] [--json] rm NAME",
        help="give a model another name (or a glob of names); `alias rm NAME` forgets one",
        description="cluster alias NAME MODEL: requests for NAME go to MODEL. "
        "cluster alias rm NAME: forget the alias NAME.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    alias.add_argument("name", metavar="NAME", help="the name clients ask for, or a glob; or rm")
    alias.add_argument("model", metavar="MODEL", help="the served model it names; after rm: NAME")
    alias.set_defaults(func=_alias)
    listing = sub.add_parser(
        "aliases",
        help="list the model aliases",
        description="Every model alias, in the order the gateway tries them.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    listing.set_defaults(func=_list)
    for p in (alias, listing):
        add_url(p)
        p.add_argument("--json", action="store_true", help="print JSON instead of text")


def _alias(args: argparse.Namespace) -> int:
    if args.name == "rm":
        return _remove(args.url, args.model, args.json)
    if not args.model.strip():
        raise CliError("which model? cluster alias NAME MODEL")
    path = f"/admin/aliases/{quote(args.name, safe='')}"
    data = admin_get(args.url, path, {"model": args.model}, method="PUT")
    if args.json:
        print(json.dumps(data, indent=2))
        return 0
    print(f"alias {describe(data)}")
    if not data.get("served", True):
        model = visible(data["model"])
        print(f"note: nothing serves {model} now; requests for it get 404 until it does")
    return 0


def _remove(url: str, name: str, as_json: bool) -> int:
    data = admin_get(url, f"/admin/aliases/{quote(name, safe='')}", method="DELETE")
    print(json.dumps(data, indent=2) if as_json else f"removed alias {describe(data)}")
    return 0


def _list(args: argparse.Namespace) -> int:
    data = admin_get(args.url, "/admin/aliases")
    if args.json:
        print(json.dumps(data, indent=2))
    else:
        print(aliases_table(data["aliases"]))
    return 0


def describe(alias: dict[str, Any]) -> str:
    """One alias on one line: `gpt-* -> demo (glob)`."""
    name, model = visible(alias["name"]), visible(alias["model"])
    return f"{name} -> {model}" + (" (glob)" if alias["glob"] else "")


def aliases_table(aliases: list[dict[str, Any]]) -> str:
    """The aliases as a table, in the order they are tried."""
    if not aliases:
        return "no aliases; make one with: cluster alias NAME MODEL"
    width = max(len("NAME"), *(len(visible(a["name"])) for a in aliases))
    lines = [f"{'NAME':<{width}}  {'KIND':<5}  MODEL"]
    for a in aliases:
        kind = "glob" if a["glob"] else "exact"
        lines.append(f"{visible(a['name']):<{width}}  {kind:<5}  {visible(a['model'])}")
    return "\n".join(lines)
