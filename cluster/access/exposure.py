"""Who may reach the endpoint without a key, decided once by `cluster up` from its flags. Pure.

    loopback + --demo       open: the generated demo model, reachable only from this machine
    --insecure (any host)   open, with a warning at every start
    anything else           every request needs an API key; until the admin creates one with
                            `cluster keys create`, the endpoint answers 401 to every request
                            (loopback without --demo too: other users of the machine reach it)

`/metrics` is open when the endpoint is bound to loopback (a local Prometheus scrapes it as is);
on any other address it needs the admin token as a bearer, like the admin API. `/health` is
always open. The admin API always needs the admin token.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass


@dataclass(frozen=True, kw_only=True)
class Exposure:
    """What `cluster up` enforces, and the line it prints about it at start."""

    keys_required: bool
    metrics_open: bool
    notice: str
    warn: bool  # print the notice as a warning (on stderr)


def is_loopback(host: str) -> bool:
    """Whether binding `host` keeps the endpoint on this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def decide(host: str, *, demo: bool, insecure: bool) -> Exposure:
    """The access rules for an endpoint bound to `host`."""
    local = is_loopback(host)
    if insecure:
        where = "this machine" if local else f"anyone who can reach {host}"
        return Exposure(
            keys_required=False,
            metrics_open=local,
            warn=True,
            notice=f"warning: --insecure: {where} may use the endpoint without an API key",
        )
    if local and demo:
        return Exposure(
            keys_required=False,
            metrics_open=True,
            warn=False,
            notice="demo on loopback: API keys are optional (a valid key is still "
            "enforced and recorded)",
        )
    return Exposure(
        keys_required=True,
        metrics_open=local,
        warn=False,
        notice="API keys required: create one with `cluster keys create NAME`",
    )
