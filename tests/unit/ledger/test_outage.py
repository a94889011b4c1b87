"""Writes the ledger refused: held in order, bounded, retried first, told once."""

from __future__ import annotations

import logging
import sqlite3
from typing import Any

import pytest

from cluster.ledger.outage import Outage


class Disk:
    """Records what was written, or refuses while full."""

    def __init__(self) -> None:
        self.full = False
        self.written: list[int] = []

    def put(self, conn: Any, value: int) -> int:
        """A write of `value`."""
        if self.full:
            raise sqlite3.OperationalError("database or disk is full")
        self.written.append(value)
        return value


def test_refused_writes_wait_in_order_and_go_before_the_next_one(
    caplog: pytest.LogCaptureFixture,
) -> None:
    disk, outage = Disk(), Outage("ledger.sqlite3")
    outage.write(None, disk.put, 1)  # type: ignore[arg-type]
    disk.full = True
    with caplog.at_level(logging.INFO, logger="cluster.ledger.outage"):
        for value in (2, 3, 4):
            outage.write(None, disk.put, value)  # type: ignore[arg-type]
        assert outage.run(None, disk.put, 5) == (False, None)  # type: ignore[arg-type]
        assert (outage.held, outage.errors, outage.since is not None) == (3, 4, True)
        disk.full = False
        assert outage.run(None, disk.put, 6) == (True, 6)  # type: ignore[arg-type]
    assert disk.written == [1, 2, 3, 4, 6] and outage.held == 0 and outage.since is None
    assert [r.levelname for r in caplog.records] == ["ERROR", "WARNING"]  # once each way
    assert "disk is full" in caplog.records[0].getMessage()


def test_beyond_the_bound_the_oldest_is_dropped_and_counted() -> None:
    disk, outage = Disk(), Outage("ledger.sqlite3", max_held=2)
    disk.full = True
    for value in range(5):
        outage.write(None, disk.put, value)  # type: ignore[arg-type]
    assert (outage.held, outage.dropped) == (2, 3)
    disk.full = False
    outage.write(None, disk.put, 5)  # type: ignore[arg-type]
    assert disk.written == [3, 4, 5]


def test_an_error_that_is_not_the_databases_state_is_not_held() -> None:
    def broken(conn: Any) -> None:
        raise sqlite3.IntegrityError("a bug, not a full disk")

    outage = Outage("ledger.sqlite3")
    with pytest.raises(sqlite3.IntegrityError):
        outage.write(None, broken)  # type: ignore[arg-type]
    assert outage.held == 0
