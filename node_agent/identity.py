"""The node's id: generated once, kept in `<data_dir>/node_id`, the same across restarts.

The controller keys its ledger and placement on this id, so a reboot or a new IP address must
not turn a node into a stranger.
"""

from __future__ import annotations

import logging
import os
import re
import uuid
from pathlib import Path

logger = logging.getLogger(__name__)

ID_LENGTH = 12  # 48 random bits: plenty for an office, short enough to read in a log line
_VALID = re.compile(r"^[0-9a-f]{8,32}$")


def node_id(data_dir: Path) -> str:
    """This node's id, read from the data dir or generated and stored there on first use."""
    path = data_dir / "node_id"
    existing = _read(path)
    if existing:
        return existing
    fresh = uuid.uuid4().hex[:ID_LENGTH]
    _write_atomically(path, fresh)
    logger.info("new node id %s stored in %s", fresh, path)
    return fresh


def _read(path: Path) -> str | None:
    """The stored id, or None when the file is missing or does not hold a valid id."""
    try:
        text = path.read_text().strip()
    except FileNotFoundError:
        return None
    if _VALID.match(text):
        return text
    logger.warning("ignoring malformed node id %r in %s", text[:40], path)
    return None


def _write_atomically(path: Path, value: str) -> None:
    """Write via a temporary file and rename, so a crash never leaves half an id behind."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)  # owner-only, like the head's
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(value + "\n")
    os.replace(tmp, path)
