"""The rolling throughput estimator, fed fixed samples."""

from __future__ import annotations

import pytest

from cluster.throughput import INITIAL_TPS, ThroughputWindow


def feed(w: ThroughputWindow, samples: list[tuple[float, int, float]]) -> None:
    for t, tokens, busy in samples:
        w.add(t, tokens, busy)


def test_none_until_enough_busy_time_and_tokens() -> None:
    w = ThroughputWindow()
    assert w.tokens_per_second() is None
    w.add(0.0, 0, 0.0)
    assert w.tokens_per_second() is None
    w.add(1.0, 500, 0.5)  # only half a busy second
    assert w.tokens_per_second() is None
    w.add(2.0, 1000, 1.0)
    assert w.tokens_per_second() == pytest.approx(1000.0)


def test_too_few_tokens_is_not_a_rate() -> None:
    w = ThroughputWindow()
    feed(w, [(0.0, 0, 0.0), (5.0, 20, 5.0)])
    assert w.tokens_per_second() is None


def test_rate_is_per_busy_second_not_wall_second() -> None:
    w = ThroughputWindow()
    feed(w, [(0.0, 0, 0.0), (10.0, 200, 2.0)])  # busy 2 s of 10
    assert w.tokens_per_second() == pytest.approx(100.0)


def test_window_rolls_over() -> None:
    w = ThroughputWindow(window_s=10)
    feed(w, [(float(t), 50 * t, 1.0 * t) for t in range(11)])  # 50 tok/s
    feed(w, [(10.0 + t, 500 + 200 * t, 10.0 + t) for t in range(1, 11)])  # then 200 tok/s
    assert w.tokens_per_second() == pytest.approx(200.0)
    assert w.busy_seconds() == pytest.approx(10.0)


def test_idle_node_keeps_its_rate() -> None:
    w = ThroughputWindow(window_s=10)
    feed(w, [(0.0, 0, 0.0), (5.0, 400, 4.0)])
    feed(w, [(float(t), 400, 4.0) for t in range(6, 60)])  # idle for a long while
    assert w.tokens_per_second() == pytest.approx(100.0)
    assert w.busy_seconds() == 0.0


def test_counter_reset_starts_a_new_series() -> None:
    w = ThroughputWindow()
    feed(w, [(0.0, 0, 0.0), (5.0, 500, 5.0)])
    assert w.tokens_per_second() == pytest.approx(100.0)
    w.add(6.0, 10, 0.1)  # agent restarted: counters back near zero
    assert w.tokens_per_second() == pytest.approx(100.0)  # old rate until the new one is known
    w.add(8.0, 610, 2.1)
    assert w.tokens_per_second() == pytest.approx(300.0)  # no negative deltas mixed in


def test_late_samples_are_ignored() -> None:
    w = ThroughputWindow()
    feed(w, [(0.0, 0, 0.0), (5.0, 500, 5.0), (4.0, 10, 0.1)])
    assert w.tokens_per_second() == pytest.approx(100.0)


def test_initial_estimate_is_conservative() -> None:
    assert 0 < INITIAL_TPS <= 20.0
    with pytest.raises(ValueError):
        ThroughputWindow(window_s=0)
