"""`cluster service install|uninstall|status`: the head (`cluster up`) as a systemd unit or a
launchd job, through the same code as `node-agent service`."""

from __future__ import annotations

import argparse

from node_agent.install.cli import ServiceArgs, run
from node_agent.install.cli import add_commands as add_service_commands


def _head_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--host", default="0.0.0.0", help="address the endpoint binds (default 0.0.0.0: the LAN)"
    )
    parser.add_argument("--port", type=int, default=8000, help="endpoint port (default 8000)")
    parser.add_argument(
        "--peer", action="append", default=[], metavar="HOST:PORT", help="as `cluster up --peer`"
    )
    parser.add_argument("--no-local-agent", action="store_true", help="do not start an agent")


def _head_args(args: argparse.Namespace) -> ServiceArgs:
    argv = ["up", "--host", args.host, "--port", str(args.port)]
    argv += [word for peer in args.peer for word in ("--peer", peer)]
    argv += ["--no-local-agent"] if args.no_local_agent else []
    return tuple(argv), ()


def add_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """`cluster service …`."""
    parser = add_service_commands(sub, "head", _head_flags, _head_args)
    parser.set_defaults(func=run)
