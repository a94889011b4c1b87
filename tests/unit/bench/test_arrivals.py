"""The benchmarks' arrival patterns and their paired interval, on made-up timings."""

from __future__ import annotations

import asyncio
import math

import pytest

from bench.arrivals import (
    burst,
    closed_loop,
    interval_verdict,
    one_by_one,
    paired_interval,
)
from bench.common import Timing


def _timing(ttft: float) -> Timing:
    return Timing(started=0.0, first=ttft, last=ttft + 0.1, tokens=2)


class Recorder:
    """A Send that answers at once and remembers what it was asked, and how many at a time."""

    def __init__(self, seconds: float = 0.001) -> None:
        self.seconds = seconds
        self.asked: list[tuple[str, int]] = []
        self.in_flight = self.most = 0

    async def __call__(self, prompt: str, max_tokens: int) -> Timing:
        self.asked.append((prompt, max_tokens))
        self.in_flight += 1
        self.most = max(self.most, self.in_flight)
        await asyncio.sleep(self.seconds)
        self.in_flight -= 1
        return _timing(max_tokens / 1000)


def test_a_constant_difference_has_an_interval_of_exactly_that() -> None:
    a = [[_timing(0.010 * (i + 1) + 0.001 * j) for j in range(10)] for i in range(8)]
    b = [[_timing(t.ttft + 0.002) for t in block] for block in a]
    low, high = paired_interval(a, b, 50, resamples=200)
    assert round(low, 9) == round(high, 9) == 0.002


def test_the_interval_widens_with_blocks_that_disagree_and_keeps_its_sign() -> None:
    a = [[_timing(0.020)] * 10 for _ in range(10)]
    b = [[_timing(0.020 + (0.001 if i % 2 else 0.005))] * 10 for i in range(10)]
    low, high = paired_interval(a, b, 50, resamples=500)
    assert 0.001 - 1e-9 <= low < high <= 0.005 + 1e-9


def test_the_verdict_needs_the_whole_interval_on_one_side_of_the_target() -> None:
    assert interval_verdict(-0.001, 0.0019, 2.0) == "PASS"
    assert interval_verdict(0.0021, 0.004, 2.0) == "MISS"
    assert interval_verdict(0.001, 0.003, 2.0) == "open"


async def test_the_closed_loop_keeps_every_client_busy_and_counts_all_but_its_first() -> None:
    send = Recorder(seconds=0.02)  # each request outlasts the spread of the starts
    timings = await closed_loop(send, ["p"] * 8, 16, seed=3, per_client=4, spread_s=0.01)
    assert len(send.asked) == 8 * 5 and len(timings) == 8 * 4
    assert send.most == 8
    assert all(8 <= n <= 24 for _, n in send.asked)
    again = Recorder()
    await closed_loop(again, ["p"] * 8, 16, seed=3, per_client=4, spread_s=0.01)
    assert sorted(again.asked) == sorted(send.asked)  # the same lengths for every path


async def test_a_burst_sends_all_at_once_and_one_by_one_never_overlaps() -> None:
    together, apart = Recorder(), Recorder()
    assert len(await burst(together, ["a", "b", "c"], 5)) == 3
    assert len(await one_by_one(apart, ["a", "b", "c"], 5)) == 3
    assert (together.most, apart.most) == (3, 1)


def test_outside_the_node_takes_the_node_s_own_ttft_off_and_is_unknown_without_it() -> None:
    assert Timing(started=1.0, first=1.3, last=1.5, tokens=3, node_ttft=0.2).outside == (
        pytest.approx(0.1)
    )
    assert math.isnan(_timing(0.3).outside)


def test_the_interval_can_be_of_the_time_outside_the_node() -> None:
    # The node's own TTFT swings by up to 100 ms from block to block, unlike in the two paths'
    # blocks side by side (where the engine's steps fell); b spends 1 ms more outside the node.
    # Its TTFT interval is as wide as the swings; outside the node it is exactly the 1 ms.
    def block(node_ttft: float, outside: float) -> list[Timing]:
        return [
            Timing(started=0.0, first=node_ttft + outside, last=1.0, tokens=2, node_ttft=node_ttft)
        ] * 4

    swings = [0.05 * (i % 3) for i in range(9)]
    a = [block(0.1 + s, 0.003) for s in swings]
    b = [block(0.1 + s, 0.004) for s in swings[1:] + swings[:1]]
    low, high = paired_interval(a, b, 50, resamples=300)
    assert high - low > 0.01
    low, high = paired_interval(a, b, 50, resamples=300, what="outside")
    assert round(low, 9) == round(high, 9) == 0.001
