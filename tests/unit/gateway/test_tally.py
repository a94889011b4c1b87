"""A gateway replica's tally (gateway/tally.py): one tap per request while the ledger is on, and
one row per request, whatever way the request ends: a Tap's outcomes and counts.

That the forwarder fills the tally in and calls `end` exactly once, however the stream ends, is
tested with the forwarder itself in test_forward.py.
"""

from __future__ import annotations

import pytest

from cluster.errors import ModelNotFound, NoCapacity
from cluster.gateway.forward import StreamFailed
from cluster.gateway.tally import GatewayMeter, RequestInfo, Tap
from cluster.ledger.rows import UNKNOWN_MODEL, Outcome, UsageAck, UsageBatch, UsageRow, Values
from cluster.types import NodeId
from node_agent.types import Finished, Usage

INFO = RequestInfo(request_id="r1", model="demo", endpoint="chat", stream=True)


def usage(prompt: int, completion: int, cached: int = 0) -> Usage:
    """A node's usage with the token counts that matter here."""
    return Usage(
        prompt_tokens=prompt,
        completion_tokens=completion,
        cached_prompt_tokens=cached,
        ttft_seconds=0.1,
        decode_tokens_per_second=10.0,
        duration_seconds=1.0,
    )


class Clock:
    """A clock that moves one second each time it is read."""

    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        self.t += 1.0
        return self.t


def run(
    node: str | None = None,
    attempts: int = 0,
    *,
    first: bool = False,
    final: Finished | StreamFailed | None = None,
    counts: tuple[int, int, int] = (0, 0, 0),
    error: Exception | None = None,
) -> UsageRow:
    """What the forwarder writes on a tally (Forwarder.stream): the node that took the request,
    whether a first token came (at clock time 2), how the node ended it and its counts so far;
    then the end, with `error` if one was raised. The one row, read back by name."""
    rows: list[Values] = []
    clock = Clock()
    tap = Tap(INFO, rows.append, clock=clock, wall=lambda: 1e9)  # clock reads 1: the start
    tap.node_id, tap.attempts = node, attempts
    if first:
        tap.first_at = clock()  # reads 2
    tap.final = final
    tap.prompt, tap.cached, tap.generated = counts
    tap.end(error)
    [row] = rows
    assert type(row) is tuple and UsageRow.of(row).values() == row
    return UsageRow.of(row)


def test_finished_on_the_first_node_is_ok_with_the_nodes_counts() -> None:
    row = run("n1", 1, first=True, final=Finished("stop", usage(7, 3, cached=3)), counts=(7, 3, 2))
    assert (row.outcome, row.node_id, row.attempts) == (Outcome.OK, "n1", 1)
    assert (row.prompt_tokens, row.cached_prompt_tokens, row.completion_tokens) == (7, 3, 3)
    assert row.ttft_s == 1.0 and row.duration_s == 2.0  # clock reads 1 (start), 2 (first), 3
    assert row.node_ttft_s == 0.1  # the node's own, from its usage
    assert (row.request_id, row.model, row.at, row.key_id) == ("r1", "demo", 1e9, None)


def test_finished_after_failover_is_failed_over() -> None:
    row = run("n2", 2, final=Finished("length", usage(5, 0)))
    assert (row.outcome, row.node_id, row.attempts) == (Outcome.FAILED_OVER, "n2", 2)
    assert row.ttft_s is None and row.node_ttft_s is None  # no token: no time to one


def test_an_error_before_routing_is_an_error_without_a_node() -> None:
    row = run(error=NoCapacity("no node", retry_after=2))
    assert (row.outcome, row.node_id, row.attempts, row.completion_tokens) == (
        Outcome.ERROR,
        None,
        0,
        0,
    )


def test_a_stream_that_fails_mid_way_is_an_error_with_the_usage_so_far() -> None:
    row = run(
        "n1",
        1,
        first=True,
        final=StreamFailed("node died", usage(9, 2, cached=4)),
        counts=(9, 4, 2),
    )
    assert (row.outcome, row.prompt_tokens, row.cached_prompt_tokens, row.completion_tokens) == (
        Outcome.ERROR,
        9,
        4,
        2,
    )
    assert row.node_ttft_s is None  # the node never reported: the gateway made this usage up


def test_a_client_that_leaves_is_cancelled_with_what_was_generated() -> None:
    row = run("n1", 1, first=True, counts=(6, 0, 2))
    assert (row.outcome, row.prompt_tokens, row.completion_tokens) == (Outcome.CANCELLED, 6, 2)


def test_a_generation_the_node_cancelled_is_cancelled() -> None:
    row = run("n1", 1, final=Finished("cancelled", usage(4, 1)))
    assert row.outcome is Outcome.CANCELLED and row.completion_tokens == 1


def test_the_nodes_end_wins_over_an_error_raised_after_it() -> None:
    row = run(
        "n1",
        1,
        first=True,
        final=Finished("stop", usage(3, 1)),
        counts=(3, 0, 1),
        error=RuntimeError("the client's socket broke"),
    )
    assert row.outcome is Outcome.OK


def test_a_failing_recorder_does_not_break_the_request(caplog: pytest.LogCaptureFixture) -> None:
    handed: list[Values] = []

    def broken(row: Values) -> None:
        handed.append(row)
        raise RuntimeError("disk full")

    tap = Tap(INFO, broken)
    tap.node_id, tap.attempts = NodeId("n1"), 1
    tap.end(None)  # logged, not raised
    assert [UsageRow.of(row).node_id for row in handed] == ["n1"]
    assert "recording request r1 failed" in caplog.text and "disk full" in caplog.text


# -- the meter: a tap per request ------------------------------------------------------------


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


def test_a_row_keeps_the_name_asked_for_only_where_an_alias_changed_it() -> None:
    asked = INFO._replace(requested_model="gpt-5-codex")
    row = UsageRow.of(Tap(asked).row())
    assert (row.model, row.requested_model) == ("demo", "gpt-5-codex")
    for info in (INFO, INFO._replace(requested_model="demo")):
        assert UsageRow.of(Tap(info).row()).requested_model is None


def test_a_model_no_node_serves_is_recorded_under_one_label() -> None:
    for asked in ("no-such-model", "x" * 256, "gpt-5-codex"):
        info = INFO._replace(model=asked, requested_model=asked)
        row = UsageRow.of(Tap(info).row(ModelNotFound(f"no {asked}")))
        assert (row.model, row.requested_model, row.outcome) == (
            UNKNOWN_MODEL,
            None,
            Outcome.ERROR,
        )
    assert UsageRow.of(Tap(INFO).row(NoCapacity("full"))).model == "demo"


def test_a_row_carries_the_clients_family() -> None:
    assert UsageRow.of(Tap(INFO._replace(client="codex")).row()).client == "codex"
    assert UsageRow.of(Tap(INFO).row()).client is None
