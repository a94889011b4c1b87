"""`cluster down`: stop the `cluster up` running on this machine, found by its state file."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

from cluster.cli.up import STATE_FILE
from cluster.paths import data_dir


def down() -> int:
    """Stop the `cluster up` running on this machine; returns the exit code."""
    path = data_dir() / STATE_FILE
    try:
        state = json.loads(path.read_text())
    except (OSError, ValueError):
        print("no running cluster found on this machine", file=sys.stderr)
        return 1
    pid = int(state["pid"])
    if not is_cluster_up(command_line(pid)):  # gone, or the pid now another program's
        path.unlink(missing_ok=True)
        print("no running cluster found on this machine (stale state removed)", file=sys.stderr)
        return 1
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        path.unlink(missing_ok=True)
        print("no running cluster found on this machine (stale state removed)", file=sys.stderr)
        return 1
    for _ in range(120):
        if not _alive(pid):
            print("stopped")
            return 0
        time.sleep(0.5)
    print(f"cluster up (pid {pid}) did not stop within 60s", file=sys.stderr)
    return 1


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def command_line(pid: int) -> list[str]:
    """The process's argv ([] if there is none): /proc on Linux, `ps` elsewhere."""
    try:
        raw = open(f"/proc/{pid}/cmdline", "rb").read()
        return [a.decode(errors="replace") for a in raw.split(b"\0") if a]
    except FileNotFoundError:
        if os.path.isdir("/proc/self"):
            return []  # Linux, and no such process
    except OSError:
        return []
    out = subprocess.run(["ps", "-p", str(pid), "-o", "command="], capture_output=True, text=True)
    return out.stdout.split()


def is_cluster_up(argv: list[str]) -> bool:
    """Whether an argv is `cluster up`'s: a pid file outlives its process, and the pid may since
    belong to any other program, which SIGTERM must not reach."""
    words = [os.path.basename(a) for a in argv]
    if "up" not in words:
        return False
    before = words[: words.index("up")]
    return "cluster" in before or "cluster.cli" in before
