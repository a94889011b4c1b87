"""bench/gateway_parts.py: a gateway request's time outside the node, split, on made-up times."""

from __future__ import annotations

import math

import pytest

from bench.common import Timing
from bench.gateway_parts import parts, parts_rows


def _through(started: float, took: float, ttft: float, node_ttft: float, first: float) -> Timing:
    return Timing(
        started=started,
        first=first,
        last=first + 0.1,
        tokens=4,
        request_id="r",
        node_ttft=node_ttft,
        gateway_start=took,
        gateway_ttft=ttft,
    )


def test_the_parts_add_up_to_the_time_outside_the_node() -> None:
    t = _through(started=10.0, took=10.002, ttft=0.050, node_ttft=0.045, first=10.053)
    split = parts(t)
    assert split is not None
    assert split == pytest.approx((0.002, 0.005, 0.001))
    assert sum(split) == pytest.approx(t.outside)


def test_a_request_without_the_gateway_s_figures_has_no_parts() -> None:
    direct = Timing(started=0.0, first=0.05, last=0.1, tokens=4, node_ttft=0.045)
    assert parts(direct) is None
    no_node = Timing(
        started=0.0, first=0.05, last=0.1, tokens=4, gateway_start=0.001, gateway_ttft=0.04
    )
    assert parts(no_node) is None


def test_rows_give_medians_and_the_slowest_requests_parts() -> None:
    # 100 requests 1 ms in, 4 ms across and 1 ms out; one more with 20 ms in: it is the slowest.
    fast = [_through(i, i + 0.001, 0.054, 0.050, i + 0.056) for i in range(100)]
    slow = _through(500.0, 500.020, 0.054, 0.050, 500.075)
    direct = [
        Timing(started=i, first=i + 0.053, last=i + 0.1, tokens=4, node_ttft=0.050)
        for i in range(100)
    ]
    [d, g] = parts_rows("x32", {"direct": direct, "gateway": [*fast, slow]})
    assert d[:5] == ["direct x32", 100, "", "3.00", ""]
    assert g[:5] == ["gateway x32", 101, "1.00", "4.00", "1.00"]
    assert g[5:] == [1, "25.00", "20.00", "4.00", "1.00"]  # the 1% is one request: the slow one


def test_no_row_for_a_path_without_figures() -> None:
    unknown = [Timing(started=0.0, first=0.05, last=0.1, tokens=4)]
    assert parts_rows("x1", {"direct": unknown, "gateway": unknown}) == []
    assert math.isnan(unknown[0].outside)
