"""Ports for the services meterless starts, chosen outside the kernel's ephemeral range.

A port found by binding to port 0 comes from the ephemeral range, the range the kernel also
takes the local ports of outgoing connections from. Ray opens many of those while it starts, so
one of them can take the port between the check and the moment our server binds it ("address
already in use"). A port below the ephemeral range is only ever handed out on request. Ray's
workers listen on 10002-19999 by default, so the choice starts above them.

A port can also be held after its server is gone: the connections it closed first wait out TCP's
TIME_WAIT (60 s on Linux), and a server that binds without SO_REUSEADDR, as Serve's does, is
refused until then. `port_state` tells that case from a port another program listens on.
"""

from __future__ import annotations

import random
import socket
from pathlib import Path

LOWEST = 20_000  # above Ray's default worker ports
IANA_EPHEMERAL = (49_152, 65_535)  # macOS and Windows use this range
TRIES = 50


def ephemeral_range(path: Path = Path("/proc/sys/net/ipv4/ip_local_port_range")) -> tuple[int, int]:
    """The kernel's ephemeral port range (Linux), else IANA's."""
    try:
        low, high = (int(x) for x in path.read_text().split())
    except (OSError, ValueError):
        return IANA_EPHEMERAL
    return low, high


def candidates(ephemeral: tuple[int, int], rng: random.Random, tries: int = TRIES) -> list[int]:
    """Random ports to try, all below the ephemeral range and above LOWEST (none if no room)."""
    top = min(ephemeral[0], 65_536)
    if top - LOWEST < 1_000:
        return []
    return [rng.randrange(LOWEST, top) for _ in range(tries)]


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port on `host` that was free a moment ago, outside the ephemeral range if possible."""
    for port in candidates(ephemeral_range(), random.Random()):
        with socket.socket() as s:
            try:
                s.bind((host, port))
            except OSError:
                continue
            return port
    with socket.socket() as s:  # no room below the ephemeral range: let the kernel pick
        s.bind((host, 0))
        return int(s.getsockname()[1])


def port_state(host: str, port: int) -> str:
    """ "free"; "lingering" (only closing connections hold it: free within a minute); "taken".

    A bind is refused the same way for both, so a program listening is told apart by answering.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family) as s:
        try:
            s.bind((host, port))
        except OSError:
            pass
        else:
            return "free"
    wildcard = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}
    try:
        socket.create_connection((wildcard.get(host, host), port), timeout=2).close()
    except OSError:
        return "lingering"
    return "taken"
