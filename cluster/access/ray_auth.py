"""Ray's token auth, pinned on for the Ray that `cluster up` starts or joins.

Ray's ports (GCS, raylets, workers, the job API) listen on every interface whatever `--host`
says: Ray 2.x has no setting that binds them to loopback. What stands between the office LAN and
running code on the head through them is Ray's token auth. Ray turns it on by default only when
`RAY_AUTH_MODE` is unset and keeps its token world-readable in `~/.ray/auth_token`; meterless
instead sets the mode to `token` itself, keeps the token owner-only in its config dir
(`<config dir>/ray-auth-token`, 0600), and refuses `RAY_AUTH_MODE=disabled` unless the operator
said `--insecure`.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from pathlib import Path

from cluster.paths import owner_only, private_dir, write_private

FILE_NAME = "ray-auth-token"
MODE_ENV = "RAY_AUTH_MODE"
TOKEN_ENVS = ("RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH")


class RayAuthRefused(Exception):
    """Ray would start or join without token auth, and the operator did not allow it."""


def ensure_token(directory: Path) -> Path:
    """The token's file in `directory`, made on first use; owner-only whatever it was."""
    path = private_dir(directory) / FILE_NAME
    try:
        write_private(path, secrets.token_hex(32))
    except FileExistsError:
        owner_only(path)
    return path


def ray_env(environ: Mapping[str, str], directory: Path, *, insecure: bool) -> dict[str, str]:
    """What to add to the environment before `ray.init` (Ray's processes inherit it).

    A token the operator gave (`RAY_AUTH_TOKEN`, `RAY_AUTH_TOKEN_PATH`: a joined Ray's) is used
    as given; otherwise the config dir's. Raises RayAuthRefused for a mode other than `token`
    without `insecure`.
    """
    mode = environ.get(MODE_ENV, "").strip().lower()
    if mode not in ("", "token"):
        if not insecure:
            raise RayAuthRefused(
                f"{MODE_ENV}={environ[MODE_ENV]} turns off Ray's token auth, and Ray's ports "
                "listen on every interface: anyone on the network could run code on this "
                "machine through them. Unset it, or pass --insecure to accept that."
            )
        return {}
    if any(environ.get(name) for name in TOKEN_ENVS):
        return {MODE_ENV: "token"}
    return {MODE_ENV: "token", "RAY_AUTH_TOKEN_PATH": str(ensure_token(directory))}
