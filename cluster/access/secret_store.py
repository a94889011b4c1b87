"""The cluster secret on the head's disk: created once, owner-only (0600 file in a 0700 dir).

`cluster up` and `cluster join-token` read it from the config dir (cluster/paths.py); whoever can
read this file can join the cluster and read its traffic, so a file others could read is refused
rather than used.
"""

from __future__ import annotations

import os
import secrets
import stat
from pathlib import Path

from node_agent.trust import SECRET_BYTES, ClusterSecret, TokenError

FILE_NAME = "cluster-secret"


class SecretFileError(Exception):
    """The secret file cannot be used; the message is one line, fit for the CLI."""


def load_or_create(directory: Path) -> tuple[ClusterSecret, bool]:
    """The cluster secret in `directory`, created on first use; True when it was just created."""
    path = directory / FILE_NAME
    if path.exists():
        return load(directory), False
    try:  # O_EXCL: two `cluster up`s starting at once must not end with two different secrets
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(directory, 0o700)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return load(directory), False
    except OSError as exc:
        raise SecretFileError(f"cannot create the cluster secret {path}: {exc.strerror}") from None
    with os.fdopen(fd, "w") as f:
        f.write(secrets.token_bytes(SECRET_BYTES).hex() + "\n")
    return load(directory), True


def load(directory: Path) -> ClusterSecret:
    """The cluster secret in `directory`; SecretFileError if missing, unreadable or exposed."""
    path = directory / FILE_NAME
    try:
        mode = path.stat().st_mode
        text = path.read_text()
    except FileNotFoundError:
        raise SecretFileError(f"no cluster secret at {path}: run `cluster up` first") from None
    except OSError as exc:
        raise SecretFileError(f"cannot read the cluster secret {path}: {exc.strerror}") from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise SecretFileError(
            f"{path} is open to other users (mode {stat.S_IMODE(mode):04o}); run `chmod 600 {path}`"
        )
    try:
        return ClusterSecret(bytes.fromhex(text.strip()))
    except (ValueError, TokenError):
        raise SecretFileError(
            f"{path} does not hold a cluster secret ({SECRET_BYTES * 2} hex digits)"
        ) from None
