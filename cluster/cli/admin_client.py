"""The CLI's side of the admin API: one call, one readable line on any failure."""

from __future__ import annotations

import os
from typing import Any

import httpx

from cluster.access import admin_token
from cluster.paths import config_dir

DEFAULT_URL = os.environ.get("METERLESS_URL", "http://127.0.0.1:8000")


class CliError(Exception):
    """An error worth one line on stderr and exit code 1."""


def admin_get(url: str, path: str, body: Any = None, *, method: str | None = None) -> Any:
    """GET (POST with `body`, or `method`) an admin API path; raises CliError with one line on
    any failure."""
    token = admin_token.for_cli()
    headers = {"authorization": f"Bearer {token}"} if token else {}
    method = method or ("GET" if body is None else "POST")
    try:
        full = f"{url.rstrip('/')}{path}"
        r = httpx.request(method, full, json=body, headers=headers, timeout=30)
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
