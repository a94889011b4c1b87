"""Where meterless keeps its data and config on the head machine (XDG, overridable)."""

from __future__ import annotations

import os
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
