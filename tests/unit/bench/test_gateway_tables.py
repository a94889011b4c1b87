"""bench/gateway_tables.py: the benchmark's rows and verdicts, on made-up timings."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.common import Timing
from bench.gateway_tables import Series, added_rows, contention_note, in_flight, latency_rows, save


def _series(ttft_s: float, blocks: int = 6, per_block: int = 10) -> Series:
    """Blocks of requests whose TTFTs spread by 0.1 ms around `ttft_s`, four tokens each."""
    s = Series()
    for b in range(blocks):
        block = []
        for i in range(per_block):
            started = b * 10.0 + i
            first = started + ttft_s + (i - (per_block - 1) / 2) * 1e-4
            block.append(Timing(started=started, first=first, last=first + 0.03, tokens=4))
        s.blocks.append(block)
        s.timings.extend(block)
    return s


def test_added_rows_judge_each_path_against_direct_by_its_interval() -> None:
    results = {"direct": _series(0.010), "gateway": _series(0.011), "slow": _series(0.020)}
    rows = {row[0]: row for row in added_rows("x1", results)}
    assert set(rows) == {"gateway x1", "slow x1"}  # direct is the baseline, not a row
    # +p50, its interval, verdict, +p99, interval, verdict, then the ratios and ITL
    assert rows["gateway x1"][1] == "1.00" and rows["gateway x1"][3] == "PASS"
    assert rows["gateway x1"][6] == "PASS"
    assert rows["slow x1"][1] == "10.00" and rows["slow x1"][3] == "MISS"
    assert rows["slow x1"][6] == "MISS"
    assert rows["slow x1"][7] == "2.00"  # p50 ratio


def test_latency_rows_count_requests_tokens_and_requests_in_flight() -> None:
    s = _series(0.010, blocks=2, per_block=3)
    s.flight_s, s.span_s = 6.0, 3.0
    [row] = latency_rows("x32 burst", {"direct": s})
    assert row[0] == "direct x32 burst"
    assert row[1] == 6
    assert row[6] == "4.0"  # tokens per request
    assert row[7] == "2.0" and in_flight(s) == pytest.approx(2.0)


def test_a_note_only_when_the_cores_were_saturated() -> None:
    quiet, busy = _series(0.01), _series(0.01)
    quiet.machine_busy, quiet.machine_total = 50, 100
    busy.machine_busy, busy.machine_total = 95, 100
    assert contention_note("x1", {"gateway": quiet}) is None
    note = contention_note("x1", {"gateway": busy})
    assert note is not None and "95% busy" in note


def test_save_writes_every_timing_by_block(tmp_path: Path) -> None:
    path = tmp_path / "timings.json"
    save({"x1": {"direct": _series(0.01, blocks=2, per_block=3)}}, path)
    blocks = json.loads(path.read_text())["x1"]["direct"]
    assert [len(b) for b in blocks] == [3, 3]
    assert blocks[0][0][3] == 4 and blocks[0][0][4] is None  # tokens; no node TTFT known
