"""`cluster`: start the head (`up`), stop it (`down`), and look at nodes and models.

Thin on purpose: every command but `up`/`down` is one call to the admin API at --url.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence

from cluster import __version__
from cluster.cli import admin_client, aliases, cost, deploy, integrations, keys, providers, service
from cluster.cli.admin_client import CliError, add_url, admin_get
from cluster.cli.join import add_join_token, secret_errors
from cluster.cli.tables import models_table, nodes_table, visible


def _up(args: argparse.Namespace) -> int:
    from cluster.cli.up import UpOptions, up
    from cluster.control.discovery import parse_peer

    if bool(args.tls_cert) != bool(args.tls_key):
        raise CliError("--tls-cert and --tls-key go together")
    if args.tls and args.tls_cert:
        raise CliError("--tls self-signed and --tls-cert are alternatives; give one")
    for peer in args.peer:
        try:
            parse_peer(peer)
        except ValueError as exc:
            raise CliError(str(exc)) from None
    with secret_errors():
        return up(
            UpOptions(
                host=args.host,
                port=args.port,
                demo=args.demo,
                local_agent=not args.no_local_agent,
                peers=tuple(args.peer),
                ray_address=args.ray_address,
                routing=args.routing,
                gateway_replicas=args.gateway_replicas,
                mdns=not args.no_mdns,
                mdns_interfaces=tuple(args.mdns_interface),
                ledger=not args.no_ledger,
                plaintext_agents=args.allow_plaintext_agents,
                affinity=not args.no_affinity,
                insecure=args.insecure,
                tls_cert=args.tls_cert,
                tls_key=args.tls_key,
                tls_self_signed=args.tls == "self-signed",
                max_body_mib=args.max_body_mib,
                local_only=args.local_only,
                idle_timeout_s=args.idle_timeout,
            )
        )


def _positive(unit: str) -> Callable[[str], float]:
    """An argparse type: a finite number above zero, of `unit`."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            value = 0.0
        if not 0 < value < float("inf"):
            raise argparse.ArgumentTypeError(f"expected a positive number of {unit}, got {text!r}")
        return value

    return parse


def _down(args: argparse.Namespace) -> int:
    from cluster.cli.down import down

    return down()


def _nodes(args: argparse.Namespace) -> int:
    data = admin_get(args.url, "/admin/nodes")
    if args.json:
        print(json.dumps(data, indent=2))
    else:
        nodes_table(data["nodes"])
    return 0


def _models(args: argparse.Namespace) -> int:
    data = admin_get(args.url, "/admin/models")
    if args.json:
        print(json.dumps(data, indent=2))
    else:
        models_table(data["models"])
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The `cluster` argument parser with every subcommand."""
    parser = argparse.ArgumentParser(
        prog="cluster", description="meterless: many machines, one OpenAI-compatible endpoint."
    )
    parser.add_argument("--version", action="version", version=f"meterless {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    up = sub.add_parser(
        "up",
        help="start the head here and stay in the foreground",
        description="Start (or join) Ray, deploy the meterless app, start a local "
        "node agent, and serve until Ctrl-C or `cluster down`.",
    )
    up.add_argument(
        "--host",
        default="127.0.0.1",
        help="address the endpoint binds (0.0.0.0 for the office LAN)",
    )
    up.add_argument("--port", type=int, default=8000, help="endpoint port (default 8000)")
    up.add_argument(
        "--demo",
        action="store_true",
        help="serve the generated `demo` model from a local agent; no network needed",
    )
    up.add_argument("--no-local-agent", action="store_true", help="do not start an agent here")
    up.add_argument(
        "--peer",
        action="append",
        default=[],
        metavar="HOST:PORT",
        help="an agent to connect to directly (where multicast is blocked); repeatable",
    )
    up.add_argument("--ray-address", help="join this Ray cluster instead of starting one")
    up.add_argument(
        "--routing",
        default="fastest",
        choices=["fastest", "round-robin", "least-outstanding"],
        help="routing policy (default: fastest)",
    )
    up.add_argument(
        "--no-affinity",
        action="store_true",
        help="with `fastest`: ignore which node holds a conversation's prefix in its "
        "cache (to measure what prefix affinity brings)",
    )
    up.add_argument("--gateway-replicas", type=int, default=1, help="gateway replicas (default 1)")
    up.add_argument(
        "--max-body-mib",
        type=_positive("MiB"),
        default=8.0,
        metavar="MIB",
        help="the largest request body the endpoint reads, in MiB; larger ones get 413 (default 8)",
    )
    up.add_argument(
        "--idle-timeout",
        type=_positive("seconds"),
        default=120.0,
        metavar="SECONDS",
        help="end a stream with an error event when its node sends nothing for this long "
        "after the first token (a stalled engine; default 120)",
    )
    up.add_argument("--no-mdns", action="store_true", help="do not browse for agents over mDNS")
    up.add_argument(
        "--mdns-interface",
        action="append",
        default=[],
        metavar="IP",
        help="browse for agents only on the interface with this address; repeatable "
        "(default: every interface)",
    )
    up.add_argument(
        "--no-ledger",
        action="store_true",
        help="do not record usage per request (to measure what recording costs)",
    )
    up.add_argument(
        "--insecure",
        action="store_true",
        help="serve without API keys even off loopback (warned at every start; by "
        "default only loopback with --demo is open), and allow RAY_AUTH_MODE=disabled",
    )
    up.add_argument(
        "--local-only",
        action="store_true",
        help="no request goes to a provider, whatever its key: a model routed to one "
        "answers 403 (`cluster keys create --local-only` does this for one key)",
    )
    up.add_argument(
        "--tls",
        choices=["self-signed"],
        help="serve HTTPS with a certificate made once in the config dir for this machine's "
        "names and addresses; its fingerprint is printed for clients to pin",
    )
    up.add_argument("--tls-cert", metavar="FILE", help="serve HTTPS with this certificate (PEM)")
    up.add_argument("--tls-key", metavar="FILE", help="the private key of --tls-cert (PEM)")
    up.add_argument(
        "--allow-plaintext-agents",
        action="store_true",
        help="also admit agents started without the join token (INSECURE: their "
        "traffic is readable and anyone can pose as one); warned at every start",
    )
    up.set_defaults(func=_up)
    add_join_token(sub)

    down = sub.add_parser("down", help="stop the `cluster up` running on this machine")
    down.set_defaults(func=_down)

    for name, func, text in (
        ("nodes", _nodes, "list the nodes and their live state"),
        ("models", _models, "list the models: desired replicas (deployed) vs nodes serving"),
    ):
        p = sub.add_parser(name, help=text, description=text)
        add_url(p)
        p.add_argument("--json", action="store_true", help="print JSON instead of a table")
        p.set_defaults(func=func)
        if name == "nodes":
            cost.add_set_cost(p)
    cost.add_commands(sub)
    keys.add_commands(sub)
    deploy.add_commands(sub)
    aliases.add_commands(sub)
    providers.add_commands(sub)
    providers.add_route_commands(sub)
    integrations.add_commands(sub)
    service.add_commands(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `cluster` command."""
    args = build_parser().parse_args(argv)
    func: Callable[[argparse.Namespace], int] = args.func
    admin_client.configure(args)
    try:
        return func(args)
    except CliError as exc:
        print(f"cluster: {visible(str(exc))}", file=sys.stderr)  # it may quote the head
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
