"""`cluster providers [add|rm]`: the cloud providers the cluster may rent from, kept on the head.

Unlike the other admin commands this one works on the head's config dir directly (as `cluster
join-token` does): a provider's key is a secret of the head, so it goes from the admin's file or
environment into an owner-only file there, and through no API, log or process argument.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

from cluster.cli.admin_client import CliError
from cluster.cli.tables import visible
from cluster.paths import config_dir
from cluster.providers import store
from cluster.providers.specs import (
    DEFAULT_OVERFLOW_WAIT_S,
    KINDS,
    Provider,
    ProviderError,
    check_base_url,
    check_key,
    check_kind,
    check_name,
    parse_price,
    parse_target,
    provider_json,
    route_json,
)

EXAMPLES = """\
Providers are kept in the head's config dir: run these on the head. A key is read from
--key-file or from the environment variable --key-env names (never from the command line,
which other users can list), and stored owner-only; listings show whether one is set, never it.
Prices are USD per million tokens: MODEL=INPUT,OUTPUT[,CACHED_INPUT].

examples:
  cluster providers add openai --kind openai --base-url https://api.openai.com/v1 \\
      --key-env OPENAI_API_KEY --price gpt-4.1=2.00,8.00,0.50
  cluster providers add anthropic --kind anthropic --base-url https://api.anthropic.com \\
      --key-file ~/anthropic.key --price claude-sonnet-4=3,15
  cluster providers                 # list them
  cluster providers rm openai       # forget one, and its key
"""


def add_commands(sub: Any) -> None:
    """Register `providers`, `providers add` and `providers rm`."""
    p = sub.add_parser(
        "providers",
        help="the cloud providers the cluster may rent from (add, rm, list)",
        description="List the cloud providers; `providers add` and `providers rm` change them.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=_list)
    actions = p.add_subparsers(dest="action", metavar="ACTION")
    add = actions.add_parser(
        "add",
        help="add a provider (or replace one of the same name)",
        description="Add a provider, or replace the one called NAME, key and prices included.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add.add_argument("name", metavar="NAME", help="what the cluster calls the provider")
    add.add_argument("--kind", required=True, help=f"its API dialect: {' or '.join(KINDS)}")
    add.add_argument("--base-url", required=True, metavar="URL", help="its API's base URL")
    key = add.add_mutually_exclusive_group(required=True)
    key.add_argument("--key-file", metavar="FILE", help="a file holding the API key alone")
    key.add_argument("--key-env", metavar="VAR", help="an environment variable holding the key")
    add.add_argument(
        "--price",
        action="append",
        default=[],
        metavar="MODEL=IN,OUT[,CACHED]",
        help="a remote model's list prices in USD per million tokens; repeatable",
    )
    add.add_argument("--json", action="store_true", help="print JSON")
    add.set_defaults(func=_add)
    rm = actions.add_parser(
        "rm", help="forget a provider and its key", description="Forget NAME and delete its key."
    )
    rm.add_argument("name", metavar="NAME")
    rm.add_argument("--json", action="store_true", help="print JSON")
    rm.set_defaults(func=_remove)


def add_route_commands(sub: Any) -> None:
    """Register `route MODEL --to|--overflow PROVIDER[:REMOTE_MODEL]`, `route rm MODEL` and
    `routes`."""
    route = sub.add_parser(
        "route",
        usage="%(prog)s [--json] MODEL --to PROVIDER[:REMOTE_MODEL]\n"
        "       %(prog)s [--json] MODEL --overflow PROVIDER[:REMOTE_MODEL] "
        "[--overflow-wait SECONDS]\n"
        "       %(prog)s [--json] rm MODEL",
        help="serve a model by renting it from a provider, or overflow to one; `route rm MODEL` "
        "stops",
        description="cluster route MODEL --to PROVIDER[:REMOTE_MODEL]: requests for MODEL go to "
        "the provider, asking it for REMOTE_MODEL (default: MODEL), with its key, "
        "and are recorded in the ledger. With --overflow instead, local nodes come first: a "
        "request goes to the provider only when no local node can start it within the wait, "
        "none serves the model, or its prompt fits no local context; never under a local-only "
        "key. Run on the head.",
    )
    route.add_argument("model", metavar="MODEL", help="the model clients ask for; or rm")
    route.add_argument("rest", metavar="MODEL", nargs="?", help="after rm: the model")
    route.add_argument("--to", metavar="PROVIDER[:REMOTE_MODEL]", help="where it goes")
    route.add_argument(
        "--overflow", metavar="PROVIDER[:REMOTE_MODEL]", help="where it goes when local is full"
    )
    route.add_argument(
        "--overflow-wait",
        metavar="SECONDS",
        type=float,
        default=DEFAULT_OVERFLOW_WAIT_S,
        help="how long a request may wait for a local node before it overflows (default "
        "%(default)g)",
    )
    route.add_argument("--json", action="store_true", help="print JSON")
    route.set_defaults(func=_route)
    listing = sub.add_parser("routes", help="list the models served by providers")
    listing.add_argument("--json", action="store_true", help="print JSON instead of a table")
    listing.set_defaults(func=_routes)


def _route(args: argparse.Namespace) -> int:
    try:
        if args.model == "rm" and args.rest:
            gone = route_json(store.remove_route(config_dir(), args.rest))
            print(json.dumps(gone, indent=2) if args.json else f"removed route {_arrow(gone)}")
            return 0
        if args.rest or bool(args.to) == bool(args.overflow):
            raise ProviderError(
                "cluster route MODEL --to PROVIDER[:REMOTE_MODEL], route MODEL --overflow "
                "PROVIDER[:REMOTE_MODEL], or route rm MODEL"
            )
        wait = None if args.to else args.overflow_wait
        target = parse_target(args.model, args.to or args.overflow, wait)
        made = route_json(store.put_route(config_dir(), target))
    except ProviderError as exc:
        raise CliError(str(exc)) from None
    print(json.dumps(made, indent=2) if args.json else f"route {_arrow(made)}")
    return 0


def _routes(args: argparse.Namespace) -> int:
    try:
        rows = [route_json(r) for r in store.routes(config_dir())]
    except ProviderError as exc:
        raise CliError(str(exc)) from None
    if args.json:
        print(json.dumps({"routes": rows}, indent=2))
    else:
        print(
            "\n".join(_arrow(r) for r in rows)
            or "no routes; make one with: cluster route MODEL --to PROVIDER"
        )
    return 0


def _arrow(r: dict[str, Any]) -> str:
    wait = r.get("overflow_wait_s")
    how = "->" if wait is None else f"overflows after {wait:g}s ->"
    model, provider, remote = (visible(r[k]) for k in ("model", "provider", "remote_model"))
    return f"{model} {how} {provider}:{remote}"


def _add(args: argparse.Namespace) -> int:
    try:
        provider = Provider(
            name=check_name(args.name),
            kind=check_kind(args.kind),
            base_url=check_base_url(args.base_url),
            prices=dict(parse_price(p) for p in args.price),
        )
        store.put(config_dir(), provider, _read_key(args.key_file, args.key_env))
    except ProviderError as exc:
        raise CliError(str(exc)) from None
    data = provider_json(provider, key_set=True)
    print(json.dumps(data, indent=2) if args.json else f"provider {describe(data)}")
    return 0


def _read_key(file: str | None, env: str | None) -> str:
    """The key from the file or environment variable the admin named."""
    if env is not None:
        value = os.environ.get(env)
        if value is None:
            raise ProviderError(f"${env} is not set; export it, or give --key-file")
        return check_key(value, f"${env}")
    path = Path(file or "").expanduser()
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ProviderError(f"no key file at {path}") from None
    except (OSError, UnicodeDecodeError) as exc:
        reason = getattr(exc, "strerror", None) or "not text"
        raise ProviderError(f"cannot read the key file {path}: {reason}") from None
    return check_key(text, str(path))


def _remove(args: argparse.Namespace) -> int:
    try:
        gone = store.remove(config_dir(), args.name)
    except ProviderError as exc:
        raise CliError(str(exc)) from None
    data = {**provider_json(gone, key_set=False), "removed": True}
    print(json.dumps(data, indent=2) if args.json else f"removed provider {describe(data)}")
    return 0


def _list(args: argparse.Namespace) -> int:
    directory = config_dir()
    try:
        rows = [
            provider_json(p, key_set=store.has_key(directory, p.name))
            for p in store.load(directory)
        ]
    except ProviderError as exc:
        raise CliError(str(exc)) from None
    if args.json:
        print(json.dumps({"providers": rows}, indent=2))
    else:
        print(providers_table(rows))
    return 0


def describe(p: dict[str, Any]) -> str:
    """One provider on one line: `openai (openai) at https://...`."""
    return f"{visible(p['name'])} ({visible(p['kind'])}) at {visible(p['base_url'])}"


def providers_table(rows: list[dict[str, Any]]) -> str:
    """The providers as a table: name, kind, key set or not, base URL, prices."""
    if not rows:
        return (
            "no providers; add one with: cluster providers add NAME --kind KIND --base-url URL ..."
        )
    shown = ("name", "kind", "base_url")  # kept in files anyone with the config dir may edit
    rows = [{**r, **{k: visible(r[k]) for k in shown}} for r in rows]
    width = max(len("NAME"), *(len(r["name"]) for r in rows))
    kind = max(len("KIND"), *(len(r["kind"]) for r in rows))
    lines = [
        f"{'NAME':<{width}}  {'KIND':<{kind}}  KEY      BASE URL  (PRICES, USD/Mtok in,out,cached)"
    ]
    for r in rows:
        key = "set" if r["key_set"] else "MISSING"
        lines.append(f"{r['name']:<{width}}  {r['kind']:<{kind}}  {key:<7}  {r['base_url']}")
        for model, price in r["prices"].items():
            numbers = [price["input"], price["output"]] + (
                [price["cached_input"]] if price["cached_input"] is not None else []
            )
            pad = f"{'':<{width}}  {'':<{kind}}         "
            lines.append(f"{pad}  {visible(model)}={visible(','.join(numbers))}")
    return "\n".join(lines)
