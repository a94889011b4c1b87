"""The `service` subcommands of `node-agent` (the agent) and `cluster` (the head)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from node_agent import settings
from node_agent.install import command
from node_agent.install.command import Machine, ServiceError
from node_agent.install.layout import Placement
from node_agent.install.units import Role

# Settings a service file does not carry: the token goes to its own file, the rest are for tests.
_NOT_IN_SERVICE = ("cluster_secret", "join_token_file", "port_file", "log_file")
ServiceArgs = tuple[tuple[str, ...], tuple[tuple[str, str], ...]]  # arguments, environment


def add_commands(
    sub: argparse._SubParsersAction[argparse.ArgumentParser],
    role: Role,
    add_settings: Callable[[argparse.ArgumentParser], None],
    service_args: Callable[[argparse.Namespace], ServiceArgs],
) -> argparse.ArgumentParser:
    """`service install|uninstall|status` under `sub`; `add_settings` adds install's flags and
    `service_args` turns them into the command's arguments and environment."""
    what = "this node's agent" if role == "agent" else "the head (`cluster up`)"
    service = sub.add_parser(
        "service",
        help=f"run {what} as a service: started at boot, back after a crash",
        description=f"Install {what} as a systemd unit (Linux) or a launchd job (macOS).",
    )
    actions = service.add_subparsers(dest="action", required=True, metavar="ACTION")
    install = actions.add_parser(
        "install",
        help="write the service file, enable and start it",
        description="Write the service file, enable and start the service. The join token "
        "(from $METERLESS_JOIN_TOKEN, --join-token-file, or asked for) goes to a 0600 file.",
    )
    command.add_scope_flags(install)
    install.add_argument("--dry-run", action="store_true", help="print what would be written")
    if role == "agent":
        install.add_argument(
            "--join-token-file",
            type=Path,
            metavar="PATH",
            help="read the join token from this file (default: $METERLESS_JOIN_TOKEN, or ask)",
        )
    add_settings(install)
    install.set_defaults(service_func=_install, service_args=service_args)
    uninstall = actions.add_parser("uninstall", help="stop, disable and remove the service")
    command.add_scope_flags(uninstall)
    uninstall.add_argument("--dry-run", action="store_true", help="print what would be done")
    uninstall.set_defaults(service_func=_uninstall)
    status = actions.add_parser("status", help="what the service manager says about it")
    command.add_scope_flags(status)
    status.set_defaults(service_func=_status)
    service.set_defaults(role=role)
    return service


def agent_main(argv: Sequence[str]) -> int:
    """`node-agent service …`."""
    parser: argparse.ArgumentParser = settings.OneLineParser(prog="node-agent")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    add_commands(sub, "agent", add_agent_settings, agent_args)
    return run(parser.parse_args(argv))


def add_agent_settings(parser: argparse.ArgumentParser) -> None:
    """Every `node-agent` flag but the token's and the testing ones, set in the service file."""
    settings.add_service_flags(parser, skip=_NOT_IN_SERVICE)


def agent_args(args: argparse.Namespace) -> ServiceArgs:
    """The agent takes its settings from METERLESS_* variables in the service file."""
    return (), settings.service_environment(args)


def run(args: argparse.Namespace, machine: Machine | None = None) -> int:
    """Carry out a parsed `service` command; one line on stderr and exit 1 on failure."""
    prog = "node-agent" if args.role == "agent" else "cluster"
    try:
        func: Callable[[argparse.Namespace, Machine], int] = args.service_func
        return func(args, machine or Machine.this())
    except ServiceError as exc:
        print(f"{prog} service: {exc}", file=sys.stderr)
        return 1


def _plan(args: argparse.Namespace, machine: Machine) -> Placement:
    acting = not getattr(args, "dry_run", False)
    if not hasattr(args, "service_args"):  # uninstall, status: only where the file is matters
        return command.placement(args.role, machine, args.system, acting=acting, installing=False)
    argv, env = args.service_args(args)
    return command.placement(
        args.role, machine, args.system, args=argv, environment=env, acting=acting
    )


def _install(args: argparse.Namespace, machine: Machine) -> int:
    plan = _plan(args, machine)
    token = None
    if args.role == "agent":
        token = command.join_token(args.join_token_file, interactive=not args.dry_run)
        if token is None and not args.dry_run:
            print(
                "warning: no join token ($METERLESS_JOIN_TOKEN, --join-token-file): the agent "
                "will serve plaintext and the head will list it as rejected",
                file=sys.stderr,
            )
    _print(command.install(plan, machine, dry_run=args.dry_run, token=token))
    return 0


def _uninstall(args: argparse.Namespace, machine: Machine) -> int:
    _print(command.uninstall(_plan(args, machine), machine, dry_run=args.dry_run))
    return 0


def _status(args: argparse.Namespace, machine: Machine) -> int:
    return command.status(_plan(args, machine), machine)


def _print(lines: Sequence[str]) -> None:
    for line in lines:
        print(line.rstrip("\n"))
