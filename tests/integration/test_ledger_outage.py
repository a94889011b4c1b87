"""A ledger on a full disk: the cluster keeps serving, and the rows arrive once there is room.

The head's data dir is a small tmpfs the test mounts (root only); its log and config dir stay
outside, so that only the ledger (and its neighbours) meet the full disk.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import sqlite3
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.harness import AgentProcess, ClusterProcess, peered_office, share_models, wait_for

pytestmark = pytest.mark.timeout(600)
REQUESTS = 5


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 4 MiB tmpfs, mounted for the test and gone after it."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root (CI runs as root)")
    mount = tmp_path / "disk"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount)], check=True)
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


@pytest.fixture
def office(small_disk: Path, tmp_path: Path, demo_model_dir: Path) -> Iterator[ClusterProcess]:
    """One agent and a head whose ledger lives on the small disk."""
    outside = tmp_path / "outside"
    (outside / "config").mkdir(parents=True)
    (outside / "cluster.log").touch()
    (small_disk / "config").symlink_to(outside / "config")
    (small_disk / "cluster.log").symlink_to(outside / "cluster.log")
    agent = AgentProcess(
        share_models(tmp_path / "agent", demo_model_dir.parent),
        name="agent",
        args=("--model", "demo", "--no-mdns"),
    )
    with peered_office(ClusterProcess(small_disk), [agent]) as (cluster, _):
        yield cluster


def fill(disk: Path) -> Path:
    """Write a file until the disk has no byte left; returns it."""
    path = disk / "filler"
    with path.open("wb", buffering=0) as f:
        for size in (1 << 16, 1 << 12, 1):
            with contextlib.suppress(OSError):
                while True:
                    f.write(b"\0" * size)
    with pytest.raises(OSError) as full, (disk / "probe").open("wb", buffering=0) as f:
        f.write(b"\0" * 4096)
    assert full.value.errno == errno.ENOSPC
    return path


def ledger_count(cluster: ClusterProcess) -> int:
    """Request rows in the ledger file."""
    conn = sqlite3.connect(cluster.data_dir / "ledger.sqlite3")
    try:
        return int(conn.execute("SELECT COUNT(*) FROM requests").fetchone()[0])
    finally:
        conn.close()


def ledger_metrics(cluster: ClusterProcess) -> dict[str, float]:
    """The meterless:ledger_* samples of /metrics, by name."""
    text = httpx.get(f"{cluster.url}/metrics", headers=cluster.admin_headers, timeout=10).text
    return {m[1]: float(m[2]) for m in re.finditer(r"^meterless:(ledger_\w+) (\S+)$", text, re.M)}


def complete(http: httpx.Client, i: int) -> None:
    """One completion, served to the end."""
    body = {"model": "demo", "prompt": "Once upon a time", "max_tokens": 4, "seed": i}
    r = http.post("/v1/completions", json=body)
    assert r.status_code == 200, r.text


def test_a_full_disk_delays_the_rows_and_loses_none(office: ClusterProcess) -> None:
    cluster = office
    with httpx.Client(base_url=cluster.url, timeout=120) as http:
        complete(http, 0)
        wait_for(lambda: ledger_count(cluster) == 1, 30, "the first row")
        filler = fill(cluster.data_dir)
        for i in range(1, REQUESTS + 1):
            complete(http, i)  # served although the ledger cannot write
    waiting = wait_for(
        lambda: (m := ledger_metrics(cluster))["ledger_rows_waiting"] >= REQUESTS and m,
        30,
        "the rows to wait in memory",
    )
    assert waiting["ledger_writable"] == 0 and waiting["ledger_write_errors_total"] >= 1
    assert ledger_count(cluster) == 1
    filler.unlink()
    wait_for(lambda: ledger_count(cluster) == 1 + REQUESTS, 30, "the rows that waited")
    after = wait_for(
        lambda: (
            (m := ledger_metrics(cluster))["ledger_writable"] == 1
            and m["ledger_rows_waiting"] == 0
            and m
        ),
        30,
        "recovery, with nothing left waiting",
    )
    assert after["ledger_rows_dropped_total"] == 0
    assert ledger_count(cluster) == 1 + REQUESTS  # and none twice
