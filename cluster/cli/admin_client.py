"""The CLI's side of the admin API: one call, one readable line on any failure."""

from __future__ import annotations

import argparse
import os
import ssl
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx

from cluster.access import admin_token, tls
from cluster.access.exposure import is_loopback
from cluster.paths import config_dir

DEFAULT_URL = os.environ.get("METERLESS_URL", "http://127.0.0.1:8000")
CA_ENV = "METERLESS_CA"
FINGERPRINT_ENV = "METERLESS_TLS_FINGERPRINT"


class CliError(Exception):
    """An error worth one line on stderr and exit code 1."""


@dataclass(frozen=True)
class Trust:
    """How the CLI trusts the endpoint: a CA file, a pinned certificate fingerprint, or the
    system's CAs; and whether it may send the admin token in clear off loopback."""

    ca: str | None = None
    fingerprint: str | None = None
    insecure: bool = False


_trust = Trust()


def add_url(p: argparse.ArgumentParser) -> None:
    """--url and how to trust it, on a command that calls the endpoint."""
    p.add_argument("--url", default=DEFAULT_URL, help=f"the endpoint (default {DEFAULT_URL})")
    p.add_argument(
        "--ca",
        default=os.environ.get(CA_ENV),
        metavar="FILE",
        help=f"trust the endpoint's certificate through this CA file (or ${CA_ENV}); a "
        "`cluster up --tls self-signed` certificate is its own CA",
    )
    p.add_argument(
        "--fingerprint",
        default=os.environ.get(FINGERPRINT_ENV),
        metavar="SHA256",
        help=f"trust only the certificate with this SHA-256 fingerprint (or ${FINGERPRINT_ENV}), "
        "as `cluster up` printed it",
    )
    p.add_argument(
        "--insecure",
        dest="insecure_http",
        action="store_true",
        help="send the admin token over plain HTTP to an address that is not loopback",
    )


def configure(args: argparse.Namespace) -> None:
    """Take the trust options a command was given (none for commands without --url)."""
    global _trust
    _trust = Trust(
        ca=getattr(args, "ca", None),
        fingerprint=getattr(args, "fingerprint", None),
        insecure=getattr(args, "insecure_http", False),
    )


def verify_for(url: str) -> ssl.SSLContext | bool:
    """What httpx verifies `url`'s certificate with. A pinned fingerprint is checked on a
    handshake of its own before anything is sent; the request then trusts that certificate."""
    parts = urlsplit(url)
    if parts.scheme != "https":
        return True
    if _trust.fingerprint:
        host, port = parts.hostname or "127.0.0.1", parts.port or 443
        try:
            der = tls.peer_certificate(host, port)
        except (OSError, tls.TlsError) as exc:
            raise CliError(f"cannot reach the cluster at {url}: {exc}") from None
        if not tls.same_fingerprint(tls.fingerprint(der), _trust.fingerprint):
            raise CliError(
                f"{url} presented a certificate with SHA-256 {tls.fingerprint(der)}, not the "
                f"pinned {_trust.fingerprint}; nothing was sent"
            )
        return tls.pinned_context(der)
    if _trust.ca:
        try:
            return ssl.create_default_context(cafile=_trust.ca)
        except (OSError, ssl.SSLError) as exc:
            raise CliError(f"cannot use {_trust.ca} as a CA: {exc}") from None
    return True


def refuse_clear_token(url: str) -> None:
    """The admin token goes in clear only to loopback, or when told --insecure."""
    parts = urlsplit(url)
    if parts.scheme == "https" or _trust.insecure or is_loopback(parts.hostname or ""):
        return
    raise CliError(
        f"refusing to send the admin token in clear to {parts.hostname}: serve the endpoint "
        "with TLS (cluster up --tls self-signed) and use an https:// --url, or pass --insecure"
    )


def admin_get(url: str, path: str, body: Any = None, *, method: str | None = None) -> Any:
    """GET (POST with `body`, or `method`) an admin API path; raises CliError with one line on
    any failure."""
    token = admin_token.for_cli()
    if token:
        refuse_clear_token(url)
    headers = {"authorization": f"Bearer {token}"} if token else {}
    method = method or ("GET" if body is None else "POST")
    try:
        full = f"{url.rstrip('/')}{path}"
        r = httpx.request(
            method, full, json=body, headers=headers, timeout=30, verify=verify_for(url)
        )
    except httpx.HTTPError as exc:
        raise CliError(f"cannot reach the cluster at {url}: {exc}") from None
    if r.status_code == 401 and path.startswith("/admin/"):
        file = config_dir() / admin_token.FILE_NAME
        if os.environ.get(admin_token.ENV):
            where = f"${admin_token.ENV}"
        else:
            where = f"{file}" if token else f"neither ${admin_token.ENV} nor {file} has one"
        raise CliError(
            f"{url}: the admin API refused the admin token ({where}); on the head "
            f"it is in the config dir, elsewhere set ${admin_token.ENV}"
        )
    if r.status_code != 200:
        try:
            message = r.json()["error"]["message"]
        except (ValueError, KeyError, TypeError):
            message = r.text[:200]
        raise CliError(f"{url}{path}: {r.status_code} {message}")
    return r.json()
