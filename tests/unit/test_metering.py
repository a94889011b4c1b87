"""A gateway replica's tap: one per request while the ledger is on, none while it is off."""

from __future__ import annotations

from cluster.gateway.tally import GatewayMeter, RequestInfo
from cluster.ledger.rows import UsageAck, UsageBatch

INFO = RequestInfo(request_id="r1", model="demo", endpoint="chat", stream=False)


async def _send(batch: UsageBatch) -> UsageAck:
    return UsageAck(written=len(batch.rows))


def test_a_request_is_tapped_and_counted_in_flight_until_it_ends() -> None:
    meter = GatewayMeter(_send)
    assert meter.recorder is not None
    tap = meter.tap(INFO)
    assert tap is not None
    assert meter.recorder.inflight == 1
    tap.end(None)
    assert (meter.recorder.inflight, meter.recorder.buffered) == (0, 1)


def test_no_tap_with_the_ledger_off() -> None:
    meter = GatewayMeter(None)
    assert meter.recorder is None
    assert meter.tap(INFO) is None


def test_tapping_turned_off_leaves_requests_unrecorded_until_turned_on() -> None:
    meter = GatewayMeter(_send)
    assert meter.recorder is not None
    meter.tapping = False
    assert meter.tap(INFO) is None
    assert (meter.recorder.inflight, meter.recorder.buffered) == (0, 0)
    meter.tapping = True
    tap = meter.tap(INFO)
    assert tap is not None
    tap.end(None)
    assert meter.recorder.buffered == 1
