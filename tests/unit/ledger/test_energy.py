"""Busy time and energy integrated from a node's status samples."""

from __future__ import annotations

import pytest

from cluster.ledger.energy import EnergyMeter


def test_busy_and_idle_seconds_add_up_into_chunks() -> None:
    meter = EnergyMeter("n", chunk_s=2.0)
    assert meter.add(100.0, 10.0, None) is None  # the first sample only sets the start
    assert meter.add(101.0, 10.25, None) is None
    chunk = meter.add(102.0, 11.25, None)
    assert chunk is not None
    assert (chunk.t0, chunk.t1, chunk.busy_s, chunk.idle_s) == (100.0, 102.0, 1.25, 0.75)
    assert chunk.measured_j is None and chunk.watts is None
    assert chunk.busy_ratio == pytest.approx(0.625)


def test_measured_power_is_integrated_with_the_trapezoid_rule() -> None:
    meter = EnergyMeter("n", chunk_s=10.0)
    meter.add(0.0, 0.0, 100.0)
    meter.add(1.0, 1.0, 200.0)
    meter.add(3.0, 1.0, 100.0)
    chunk = meter.close()
    assert chunk is not None and chunk.measured_j == 150.0 + 300.0
    assert chunk.watts == 150.0


def test_a_change_in_what_is_measured_cuts_the_chunk() -> None:
    meter = EnergyMeter("n", chunk_s=10.0)
    meter.add(0.0, 0.0, 50.0)
    meter.add(1.0, 0.0, 50.0)
    cut = meter.add(2.0, 0.0, None)  # 1..2 is not measured
    assert cut is not None and (cut.t0, cut.t1, cut.measured_j) == (0.0, 1.0, 50.0)
    rest = meter.close()
    assert rest is not None and (rest.t0, rest.t1, rest.measured_j) == (1.0, 2.0, None)
    assert meter.close() is None


def test_a_silence_is_left_out_and_a_restarted_counter_counts_from_zero() -> None:
    meter = EnergyMeter("n", chunk_s=100.0, max_gap_s=5.0)
    meter.add(0.0, 50.0, None)
    meter.add(1.0, 50.5, None)
    gap = meter.add(60.0, 80.0, None)  # 59 s without status: not guessed
    assert gap is not None and (gap.t0, gap.t1, gap.busy_s) == (0.0, 1.0, 0.5)
    meter.add(61.0, 0.25, None)  # the agent restarted: its counter began again
    chunk = meter.close()
    assert chunk is not None and (chunk.busy_s, chunk.idle_s) == (0.0, 1.0)
    assert meter.last_at == 61.0 and meter.recent() is chunk
