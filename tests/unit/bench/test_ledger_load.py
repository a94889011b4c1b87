"""bench.ledger's windows: requests, seconds and CPU by process between two marks."""

from __future__ import annotations

import pytest

from bench.ledger_load import Mark


def test_a_window_is_what_changed_between_its_marks() -> None:
    start = Mark(answered=100, at=10.0, cpu={"gateway": 1.0, "controller": 0.5, "proxy": 0.0})
    end = Mark(answered=700, at=11.0, cpu={"gateway": 1.9, "controller": 0.53, "proxy": 0.01})
    window = start.to(end)
    assert window.requests == 600
    assert window.seconds == pytest.approx(1.0)
    assert window.parts == pytest.approx({"gateway": 0.9, "controller": 0.03, "proxy": 0.01})
    assert window.cpu_s == pytest.approx(0.94)
    assert window.rps == pytest.approx(600.0)
    assert window.cpu_ms == pytest.approx(0.94 / 600 * 1000)
