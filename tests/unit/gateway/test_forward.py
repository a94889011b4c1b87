"""The forwarder's tally: every request's is filled in, and `end` is called exactly once,
however the stream ends. The nodes are scripted stand-ins; the forwarder and router are real."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from typing import Any

import pytest

from cluster.errors import InvalidRequest, ModelNotFound, NoCapacity
from cluster.gateway.forward import (
    Forwarder,
    ForwardEvent,
    ForwardSettings,
    Routed,
    StreamFailed,
    restarts,
)
from cluster.gateway.routing import RouteRequest, make_router
from cluster.gateway.tally import RequestInfo, Tap
from cluster.ledger.rows import Outcome, UsageRow
from cluster.node_client import NodeFailed, NodePromptTooLong, NodeTimeout, NodeUnavailable
from cluster.types import ModelName, ModelTraits, NodeId, NodeState, NodeTable, NodeView
from node_agent.types import Delta, Finished, GenerateRequest, Usage

M = ModelName("demo")
USAGE = Usage(
    prompt_tokens=5,
    completion_tokens=2,
    cached_prompt_tokens=0,
    ttft_seconds=0.1,
    decode_tokens_per_second=10.0,
    duration_seconds=0.2,
)
REQUEST = GenerateRequest(request_id="r1", model=M, text="hi")
ROUTE = RouteRequest(M, 16)
INFO = RequestInfo(request_id="r1", model=M, endpoint="completions", stream=True)
Script = Sequence[Delta | Finished | Exception | float]  # a float: sleep that long


class Node:
    """A scripted node client: its events in order; an exception is raised where it stands."""

    def __init__(self, script: Script) -> None:
        self.script = script

    async def generate(self, request: GenerateRequest) -> AsyncIterator[Delta | Finished]:
        for item in self.script:
            if isinstance(item, Exception):
                raise item
            if isinstance(item, float):
                await asyncio.sleep(item)
                continue
            yield item


class Pool:
    """Clients by address, as ClientPool.get hands them out."""

    def __init__(self, nodes: dict[str, Node]) -> None:
        self.nodes = nodes

    def get(self, address: str, *, plaintext: bool = False) -> Node:
        return self.nodes[address]


def office(
    scripts: dict[str, Script], settings: ForwardSettings | None = None
) -> tuple[Forwarder, NodeTable]:
    """A forwarder (round-robin, in the scripts' order) over one ready node per script."""
    views = tuple(
        NodeView(
            node_id=NodeId(n),
            name=n,
            address=n,
            engines=("mlx",),
            state=NodeState.READY,
            models=(M,),
        )
        for n in scripts
    )
    pool: Any = Pool({n: Node(s) for n, s in scripts.items()})
    settings = settings or ForwardSettings(max_attempts=3)
    forwarder = Forwarder(make_router("round-robin"), pool, settings)
    return forwarder, NodeTable(version=1, nodes=views)


def tapped() -> tuple[Tap, list[UsageRow]]:
    """A tap and the rows it made, read by name."""
    rows: list[UsageRow] = []
    return Tap(INFO, lambda values: rows.append(UsageRow.of(values))), rows


async def test_a_finished_stream_is_recorded_once_with_the_nodes_counts() -> None:
    forwarder, table = office({"n1": [Delta("a", 1, 5), Delta("b", 1), Finished("stop", USAGE)]})
    tap, rows = tapped()
    got = [e async for e in forwarder.stream(table, REQUEST, ROUTE, tap)]
    assert [type(e) for e in got] == [Routed, Delta, Delta, Finished]
    [row] = rows
    assert (row.outcome, row.node_id, row.attempts, row.completion_tokens) == (
        Outcome.OK,
        "n1",
        1,
        2,
    )
    assert row.prompt_tokens == 5 and row.ttft_s is not None and row.ttft_s <= row.duration_s


async def test_a_node_that_fails_before_the_first_token_is_failed_over() -> None:
    forwarder, table = office(
        {"n1": [NodeUnavailable("gone")], "n2": [Delta("a", 2, 5), Finished("stop", USAGE)]}
    )
    tap, rows = tapped()
    [e async for e in forwarder.stream(table, REQUEST, ROUTE, tap)]
    [row] = rows
    assert (row.outcome, row.node_id, row.attempts) == (Outcome.FAILED_OVER, "n2", 2)


async def test_an_error_before_any_event_is_recorded_once_as_an_error() -> None:
    forwarder, table = office({"n1": []})
    tap, rows = tapped()
    request = GenerateRequest(request_id="r1", model="elsewhere", text="hi")
    with pytest.raises(ModelNotFound):
        await anext(forwarder.stream(table, request, ROUTE, tap))
    [row] = rows
    assert (row.outcome, row.node_id) == (Outcome.ERROR, None)


async def test_a_consumer_that_closes_early_is_recorded_once_as_cancelled() -> None:
    forwarder, table = office({"n1": [Delta("a", 1, 5), Delta("b", 1), Finished("stop", USAGE)]})
    tap, rows = tapped()
    stream = forwarder.stream(table, REQUEST, ROUTE, tap)
    assert isinstance(await anext(stream), Routed)
    await anext(stream)
    await stream.aclose()  # type: ignore[attr-defined]
    [row] = rows
    assert (row.outcome, row.completion_tokens) == (Outcome.CANCELLED, 1)


async def test_a_node_that_stalls_after_the_first_token_ends_the_stream_with_its_counts() -> None:
    stalled = [Delta("a", 1, 5), Delta("b", 1), 30.0, Finished("stop", USAGE)]
    forwarder, table = office({"n1": stalled}, ForwardSettings(idle_timeout_s=0.05))
    tap, rows = tapped()
    got = [e async for e in forwarder.stream(table, REQUEST, ROUTE, tap)]
    assert [type(e) for e in got] == [Routed, Delta, Delta, StreamFailed]
    failed = got[-1]
    assert isinstance(failed, StreamFailed) and "stalled" in failed.message
    assert (failed.usage.prompt_tokens, failed.usage.completion_tokens) == (5, 2)
    [row] = rows
    assert (row.outcome, row.prompt_tokens, row.completion_tokens) == (Outcome.ERROR, 5, 2)


async def test_the_idle_timeout_does_not_apply_before_the_first_token() -> None:
    slow_start = [0.2, Delta("a", 1, 5), Finished("stop", USAGE)]
    forwarder, table = office({"n1": slow_start}, ForwardSettings(idle_timeout_s=0.05))
    got = [e async for e in forwarder.stream(table, REQUEST, ROUTE)]
    assert [type(e) for e in got] == [Routed, Delta, Finished]


async def test_a_node_that_fails_mid_stream_is_recorded_as_an_error_with_its_counts() -> None:
    forwarder, table = office({"n1": [Delta("a", 1, 5), Delta("b", 1), NodeUnavailable("gone")]})
    tap, rows = tapped()
    got = [e async for e in forwarder.stream(table, REQUEST, ROUTE, tap)]
    assert type(got[-1]) is StreamFailed
    [row] = rows
    assert (row.outcome, row.prompt_tokens, row.completion_tokens) == (Outcome.ERROR, 5, 2)


async def test_a_cancelled_task_is_recorded_once_as_cancelled_not_as_an_error() -> None:
    forwarder, table = office({"n1": [Delta("a", 1, 5), 3600.0, Finished("stop", USAGE)]})
    tap, rows = tapped()

    async def consume() -> None:
        async for _ in forwarder.stream(table, REQUEST, ROUTE, tap):
            pass

    task = asyncio.get_running_loop().create_task(consume())
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert [r.outcome for r in rows] == [Outcome.CANCELLED]


async def test_without_a_tap_the_events_are_the_same() -> None:
    script: Script = [Delta("a", 1, 5), Finished("stop", USAGE)]
    forwarder, table = office({"n1": script})
    bare: list[ForwardEvent] = [e async for e in forwarder.stream(table, REQUEST, ROUTE)]
    tap, _ = tapped()
    forwarder, table = office({"n1": script})
    assert [e async for e in forwarder.stream(table, REQUEST, ROUTE, tap)] == bare


async def test_a_tool_request_records_its_features_and_a_reasoning_node_adds_one() -> None:
    from node_agent.types import (
        TOOLS,
        ReasoningDelta,
        Tool,
        ToolCallDelta,
        ToolChoice,
        ToolChoiceMode,
    )

    forwarder, table = office(
        {
            "n1": [
                ReasoningDelta("hmm", 1, 5),  # type: ignore[list-item]
                ToolCallDelta(index=0, id="call_1", name="f", tokens=1),  # type: ignore[list-item]
                ToolCallDelta(index=0, arguments="{}", done=True, tokens=1),  # type: ignore[list-item]
                Finished("tool_calls", USAGE),
            ]
        }
    )
    forced = GenerateRequest(
        request_id="r1",
        model=M,
        text="hi",
        tools=(Tool(name="f"),),
        tool_choice=ToolChoice(ToolChoiceMode.REQUIRED),
    )
    # A node that advertises tools and constraints, as capable agents do.
    node = table.nodes[0]
    traits = ((M, ModelTraits(capabilities=frozenset({TOOLS, "constraints"}))),)
    table = NodeTable(version=2, nodes=(NodeView(**{**node.__dict__, "traits": traits}),))
    tap, rows = tapped()
    got = [e async for e in forwarder.stream(table, forced, ROUTE, tap)]
    assert [type(e).__name__ for e in got] == [
        "Routed",
        "ReasoningDelta",
        "ToolCallDelta",
        "ToolCallDelta",
        "Finished",
    ]
    [row] = rows
    assert row.features == "constrained,reasoning,tools"
    assert row.prompt_tokens == 5 and row.ttft_s is not None  # the first event was reasoning


async def test_a_prompt_too_long_for_the_node_is_a_400_that_says_so() -> None:
    forwarder, table = office({"n1": [NodePromptTooLong("n1: the prompt has 9000 tokens")]})
    with pytest.raises(InvalidRequest) as caught:
        [e async for e in forwarder.stream(table, REQUEST, ROUTE)]
    assert caught.value.code == "context_length_exceeded"
    assert caught.value.message == "the prompt has 9000 tokens"


def test_a_long_prompt_gets_time_to_prefill_before_its_first_token() -> None:
    forwarder, _ = office({"n1": []})
    short = forwarder.first_token_deadline_s(ROUTE)
    assert short == forwarder.settings.first_token_timeout_s
    long = RouteRequest(M, 16, prompt_chars=80_000)  # some 20k tokens: a coding agent's prompt
    assert forwarder.first_token_deadline_s(long) == short + 200.0


CUT_OFF: Script = [Delta("a", 1, 5), Delta("b", 1), NodeUnavailable("gone")]


def test_only_a_whole_answer_cut_off_by_a_node_that_went_away_or_stalled_restarts() -> None:
    gone = StreamFailed("gone", USAGE, NodeUnavailable("gone"))
    stalled = StreamFailed("stalled", USAGE, NodeTimeout("no event"))
    broken = StreamFailed("engine error", USAGE, NodeFailed("boom"))
    assert restarts(gone, whole=True) and restarts(stalled, whole=True)
    assert not restarts(gone, whole=False)  # the client has seen its tokens
    assert not restarts(broken, whole=True)  # another node's engine would fail it too
    assert not restarts(Finished("stop", USAGE), whole=True)


async def test_a_whole_answer_cut_off_mid_generation_is_restarted_on_another_node() -> None:
    done: Script = [Delta("x", 1, 5), Delta("y", 1), Finished("stop", USAGE)]
    forwarder, table = office({"n1": CUT_OFF, "n2": done})
    tap, rows = tapped()
    got = [e async for e in forwarder.stream(table, REQUEST, ROUTE, tap, whole=True)]
    assert got[0] == Routed(NodeId("n2"), 2)
    assert [e.text for e in got if isinstance(e, Delta)] == ["x", "y"]  # nothing of n1's
    assert isinstance(got[-1], Finished)
    [row] = rows
    assert (row.outcome, row.node_id, row.attempts) == (Outcome.FAILED_OVER, "n2", 2)


async def test_a_stream_cut_off_mid_generation_still_ends_with_its_failure() -> None:
    forwarder, table = office({"n1": CUT_OFF, "n2": [Delta("x", 1, 5), Finished("stop", USAGE)]})
    got = [e async for e in forwarder.stream(table, REQUEST, ROUTE)]
    assert got[0] == Routed(NodeId("n1"), 1) and isinstance(got[-1], StreamFailed)


async def test_restarts_try_each_node_once_then_the_request_is_refused() -> None:
    forwarder, table = office({"n1": CUT_OFF, "n2": CUT_OFF}, ForwardSettings(max_attempts=5))
    tap, rows = tapped()
    with pytest.raises(NoCapacity):
        [e async for e in forwarder.stream(table, REQUEST, ROUTE, tap, whole=True)]
    [row] = rows
    assert row.outcome == Outcome.ERROR


async def test_a_whole_answer_whose_engine_fails_is_not_restarted() -> None:
    broken: Script = [Delta("a", 1, 5), NodeFailed("boom")]
    forwarder, table = office({"n1": broken, "n2": [Delta("x", 1, 5), Finished("stop", USAGE)]})
    got = [e async for e in forwarder.stream(table, REQUEST, ROUTE, whole=True)]
    assert got[0] == Routed(NodeId("n1"), 1) and isinstance(got[-1], StreamFailed)
