"""A gateway replica's tap: one per request while the ledger is on, none while it is off; the
rows counted in /metrics by the serving node's name whenever it is read."""

from __future__ import annotations

from cluster.metering import OBSERVE_EVERY, GatewayMeter
from cluster.recorder import UsageAck, UsageBatch
from cluster.types import NodeId, NodeState, NodeTable, NodeView
from cluster.usage import RequestInfo
from node_agent.types import Finished, Usage

INFO = RequestInfo(request_id="r1", model="demo", endpoint="chat", stream=False)


async def _send(batch: UsageBatch) -> UsageAck:
    return UsageAck(written=len(batch.rows))


def test_a_request_is_tapped_and_counted_in_flight_until_it_ends() -> None:
    meter = GatewayMeter(_send)
    assert meter.recorder is not None
    tap = meter.tap(INFO, NodeTable())
    assert tap is not None
    assert meter.recorder.inflight == 1
    tap.end(None)
    assert (meter.recorder.inflight, meter.recorder.buffered) == (0, 1)


def test_no_tap_with_the_ledger_off() -> None:
    meter = GatewayMeter(None)
    assert meter.recorder is None
    assert meter.tap(INFO, NodeTable()) is None


def test_tapping_turned_off_leaves_requests_unrecorded_until_turned_on() -> None:
    meter = GatewayMeter(_send)
    assert meter.recorder is not None
    meter.tapping = False
    assert meter.tap(INFO, NodeTable()) is None
    assert (meter.recorder.inflight, meter.recorder.buffered) == (0, 0)
    meter.tapping = True
    tap = meter.tap(INFO, NodeTable())
    assert tap is not None
    tap.end(None)
    assert meter.recorder.buffered == 1


def _served(meter: GatewayMeter, table: NodeTable, node: str, tokens: int) -> None:
    tap = meter.tap(INFO, table)
    assert tap is not None
    usage = Usage(prompt_tokens=3, completion_tokens=tokens, cached_prompt_tokens=0,
                  ttft_seconds=0.01, decode_tokens_per_second=10.0, duration_seconds=0.1)
    tap.node_id, tap.attempts = NodeId(node), 1
    tap.final = Finished("stop", usage)
    tap.end(None)


def _generated(text: str) -> list[str]:
    return [line for line in text.splitlines()
            if line.startswith("meterless:generation_tokens_total")]


def test_metrics_count_every_request_ended_when_read_by_the_node_name_seen() -> None:
    meter = GatewayMeter(_send)
    table = NodeTable(version=1, nodes=(NodeView(
        node_id=NodeId("id-1"), name="mini", address="a:1", engines=("mlx",),
        state=NodeState.READY, models=("demo",)),))
    for _ in range(3):
        _served(meter, table, "id-1", tokens=5)
    _served(meter, NodeTable(version=2), "id-1", tokens=1)  # the node gone from the table
    text = meter.render({"nodes": []}, NodeTable()).decode()
    assert _generated(text) == ['meterless:generation_tokens_total{model="demo",node="mini"} 16.0']


def test_metrics_are_counted_in_batches_without_a_read() -> None:
    meter = GatewayMeter(_send)
    table = NodeTable()
    for _ in range(OBSERVE_EVERY):
        _served(meter, table, "id-2", tokens=1)
    counted = meter.metrics.render({"nodes": []}, table).decode()  # the metrics alone
    assert _generated(counted) == [
        f'meterless:generation_tokens_total{{model="demo",node="id-2"}} {OBSERVE_EVERY:.1f}']
    _served(meter, table, "id-2", tokens=1)
    assert _generated(meter.metrics.render({"nodes": []}, table).decode()) == _generated(counted)
