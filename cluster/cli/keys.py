"""`cluster keys create|list|revoke`: thin calls to the admin API."""

from __future__ import annotations

import argparse
import json
import time
from typing import Any
from urllib.parse import quote

from cluster.cli.admin_client import add_url, admin_get
from cluster.cli.tables import visible


def add_commands(sub: Any) -> None:
    """Register `keys` and its actions."""
    keys = sub.add_parser(
        "keys",
        help="API keys for the endpoint: create, list, revoke",
        description="API keys for the OpenAI endpoint. The full key is shown "
        "once, by `create`; the cluster keeps only its hash.",
    )
    actions = keys.add_subparsers(dest="action", required=True, metavar="ACTION")
    create = actions.add_parser(
        "create",
        help="make a key and print it (the only time)",
        description="Make a key and print it. Store it now: it is never shown again.",
    )
    create.add_argument("name", help="a name for the key (who or what uses it)")
    create.add_argument(
        "--models",
        nargs="+",
        default=[],
        metavar="M",
        help="the only models the key may use (default: every model)",
    )
    create.add_argument(
        "--max-concurrent",
        type=int,
        metavar="N",
        help="at most N requests in flight per gateway replica; more get 429",
    )
    create.add_argument(
        "--local-only",
        action="store_true",
        help="the key's requests never go to a provider: a model routed to one answers 403",
    )
    create.set_defaults(func=_create)
    listing = actions.add_parser(
        "list",
        help="list the keys (never their secrets)",
        description="Every key, live and revoked, without secrets.",
    )
    listing.set_defaults(func=_list)
    revoke = actions.add_parser(
        "revoke",
        help="revoke a key; it stops working within a second",
        description="Revoke the live key with this name.",
    )
    revoke.add_argument("name", help="the key's name")
    revoke.set_defaults(func=_revoke)
    for p in (create, listing, revoke):
        add_url(p)
        p.add_argument("--json", action="store_true", help="print JSON instead of text")


def _create(args: argparse.Namespace) -> int:
    body = {
        "name": args.name,
        "models": args.models,
        "max_concurrent": args.max_concurrent,
        "local_only": args.local_only,
    }
    data = admin_get(args.url, "/admin/keys", body=body)
    if args.json:
        print(json.dumps(data, indent=2))
    else:
        print(visible(data["key"]))
        print(
            f"key {visible(data['key_id'])} ({visible(data['name'])}): {_limits(data)}; "
            "store it now, it is not shown again"
        )
    return 0


def _list(args: argparse.Namespace) -> int:
    data = admin_get(args.url, "/admin/keys")
    if args.json:
        print(json.dumps(data, indent=2))
        return 0
    print(f"{'NAME':<20} {'KEY ID':<14} {'STATE':<8} {'CREATED':<17} LIMITS")
    for k in data["keys"]:
        state = "revoked" if k["revoked_at"] else "live"
        created = time.strftime("%Y-%m-%d %H:%M", time.localtime(k["created_at"]))
        name, key_id = visible(k["name"]), visible(k["key_id"])
        print(f"{name:<20} {key_id:<14} {state:<8} {created:<17} {_limits(k)}")
    return 0


def _revoke(args: argparse.Namespace) -> int:
    data = admin_get(args.url, f"/admin/keys/{quote(args.name, safe='')}/revoke", body={})
    if args.json:
        print(json.dumps(data, indent=2))
    else:
        print(f"revoked key {visible(data['key_id'])} ({visible(data['name'])})")
    return 0


def _limits(k: dict[str, Any]) -> str:
    models = ", ".join(visible(m) for m in k["models"]) or "every model"
    limit = k["max_concurrent"]
    local = ", local only" if k.get("local_only") else ""
    return models + (f", at most {limit} in flight" if limit else "") + local
