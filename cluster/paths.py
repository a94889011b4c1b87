"""Where meterless keeps its data and config on the head machine (XDG, overridable), and how
it makes them owner-only: the data dir holds the ledger (every request's key and model) and
the deployments, so it is 0700 and its files 0600, like the config dir's secrets."""

from __future__ import annotations

import contextlib
import os
import stat
from pathlib import Path


def data_dir() -> Path:
    """`$METERLESS_DATA_DIR`, else `$XDG_DATA_HOME/meterless` (~/.local/share/meterless)."""
    if explicit := os.environ.get("METERLESS_DATA_DIR"):
        return Path(explicit).expanduser()
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base).expanduser() / "meterless"


def config_dir() -> Path:
    """`$METERLESS_CONFIG_DIR`, else `$XDG_CONFIG_HOME/meterless` (~/.config/meterless)."""
    if explicit := os.environ.get("METERLESS_CONFIG_DIR"):
        return Path(explicit).expanduser()
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base).expanduser() / "meterless"


def private_dir(path: Path) -> Path:
    """`path`, created if needed, readable by its owner only (0700)."""
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    if stat.S_IMODE(path.stat().st_mode) & 0o077:
        path.chmod(0o700)
    return path


def write_private(path: Path, text: str) -> None:
    """Create `path` with mode 0600 from the start (never briefly world-readable)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)


def private_file(path: Path | str) -> None:
    """Make `path` owner-only (0600), creating it empty if missing; ":memory:" is left alone.

    SQLite gives a database's -wal and -shm files the mode of the database file, so a database
    created this way before it is opened stays owner-only with them."""
    if str(path) == ":memory:":
        return
    path = Path(path)
    with contextlib.suppress(FileExistsError):
        write_private(path, "")
    owner_only(path)


def owner_only(path: Path) -> bool:
    """Make an existing file 0600 if others may read it; whether it had to be."""
    if not stat.S_IMODE(path.stat().st_mode) & 0o077:
        return False
    path.chmod(0o600)
    return True
