"""The admin token: made once by `cluster up`, kept owner-only in the config dir, read by the CLI.

The file is `<config dir>/admin-token`, mode 0600 in a directory of mode 0700. The gateways only
ever see its SHA-256 (cluster/access/keys.py `admin_ok`), so the token itself is in no Ray argument
and no log. The CLI sends it as a bearer token on every `/admin/*` call: from
`$METERLESS_ADMIN_TOKEN` when set (a machine other than the head), else from the file.
"""

from __future__ import annotations

import logging
import os
import secrets
from pathlib import Path

from cluster.access.keys import ADMIN_PREFIX
from cluster.paths import config_dir, owner_only, private_dir, write_private

logger = logging.getLogger(__name__)

FILE_NAME = "admin-token"
ENV = "METERLESS_ADMIN_TOKEN"


def ensure(directory: Path | None = None) -> tuple[str, Path]:
    """The admin token, made on first use; (token, path of its file)."""
    path = private_dir(directory or config_dir()) / FILE_NAME
    try:
        write_private(path, f"{ADMIN_PREFIX}-{secrets.token_hex(24)}\n")
        logger.info("admin token created in %s", path)
    except FileExistsError:
        if owner_only(path):
            logger.warning("%s was readable by others; it is now owner-only", path)
    return path.read_text().strip(), path


def for_cli() -> str | None:
    """The token the CLI sends: `$METERLESS_ADMIN_TOKEN`, else the head's file; None if neither."""
    if token := os.environ.get(ENV, "").strip():
        return token
    try:
        return (config_dir() / FILE_NAME).read_text().strip() or None
    except OSError:
        return None
