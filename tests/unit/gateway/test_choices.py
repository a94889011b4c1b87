"""Several choices of one request (gateway/choices.py, gateway/openai/response.py): a generation per
choice, spread over the nodes or batched on one, interleaved into one answer; one failing ends
it. The nodes are scripted stand-ins; the forwarder and router are real."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from typing import Any

import pytest

from cluster.errors import ModelNotFound, UpstreamFailed
from cluster.gateway.choices import Sampled, choice_events, interleave, samples, started
from cluster.gateway.forward import Forwarder, ForwardEvent, ForwardSettings, Routed, StreamFailed
from cluster.gateway.openai.parse import ChatCompletionRequest, CompletionRequest, parse_request
from cluster.gateway.openai.response import collect, sse_frames
from cluster.gateway.routing import RouteRequest, make_router
from cluster.gateway.tally import RequestInfo, Tap
from cluster.ledger.rows import UsageRow
from cluster.types import ModelName, NodeId, NodeState, NodeTable, NodeView
from node_agent.types import (
    Delta,
    Finished,
    GenerateEvent,
    GenerateRequest,
    Sampling,
    ToolCallDelta,
    Usage,
)

M = ModelName("demo")


def usage(completion: int = 2) -> Usage:
    return Usage(
        prompt_tokens=5,
        completion_tokens=completion,
        cached_prompt_tokens=0,
        ttft_seconds=0.01,
        decode_tokens_per_second=10.0,
        duration_seconds=0.05,
    )


class Node:
    """A scripted node client: per request, a short answer naming the request, after a pause."""

    def __init__(self) -> None:
        self.requests: list[GenerateRequest] = []

    async def generate(self, request: GenerateRequest) -> AsyncIterator[GenerateEvent]:
        self.requests.append(request)
        await asyncio.sleep(0.01)
        yield Delta(request.request_id, 1, prompt_tokens=5)
        await asyncio.sleep(0.01)
        yield Finished("stop", usage(1))


class Pool:
    def __init__(self, nodes: dict[str, Node]) -> None:
        self.nodes = nodes

    def get(self, address: str, *, plaintext: bool = False) -> Node:
        return self.nodes[address]


def view(node_id: str) -> NodeView:
    return NodeView(
        node_id=NodeId(node_id),
        name=node_id,
        address=node_id,
        engines=("mlx",),
        state=NodeState.READY,
        models=(M,),
        decode_tps=100.0,
        tps_measured=True,
    )


REQUEST = GenerateRequest(request_id="r1", model=M, text="hi", sampling=Sampling(seed=7))
ROUTE = RouteRequest(M, 64, prefix_keys=(11, 12))


def forwarder(nodes: dict[str, Node]) -> Forwarder:
    return Forwarder(make_router("fastest"), Pool(nodes), ForwardSettings())  # type: ignore[arg-type]


def test_each_sample_has_its_own_id_and_seed() -> None:
    first, second, third = samples(REQUEST, 3)
    assert first is REQUEST
    assert [(s.request_id, s.sampling.seed) for s in (second, third)] == [("r1-1", 8), ("r1-2", 9)]
    unseeded = samples(GenerateRequest(request_id="r", model=M, text="hi"), 2)
    assert [s.sampling.seed for s in unseeded] == [None, None]
    assert samples(REQUEST, 1) == [REQUEST]


async def drain(events: AsyncGenerator[Sampled, None]) -> list[Sampled]:
    return [item async for item in events]


async def test_choices_spread_over_nodes_even_when_the_prompt_is_cached_on_one() -> None:
    nodes = {"a": Node(), "b": Node()}
    fwd = forwarder(nodes)
    fwd.router.record(ROUTE, NodeId("a"))  # "a" holds the prompt: affinity would pick it
    table = NodeTable(version=1, nodes=(view("a"), view("b")))
    rows: list[Any] = []

    def tap(request_id: str) -> Tap:
        info = RequestInfo(request_id=request_id, model=M, endpoint="chat", stream=False)
        return Tap(info, rows.append)

    events = choice_events(fwd, table, REQUEST, 2, ROUTE, tap)
    routed, rest = await started(events, 2)
    assert [r.node_id for r in routed] == ["a", "b"]  # the first keeps its prefix's node
    items = await drain(rest)
    texts = {(i.index, i.event.text) for i in items if isinstance(i.event, Delta)}
    assert texts == {(0, "r1"), (1, "r1-1")}
    assert [r.request_id for r in nodes["a"].requests + nodes["b"].requests] == ["r1", "r1-1"]
    # A ledger row per choice, under the choice's own id.
    assert sorted(UsageRow(*row).request_id for row in rows) == ["r1", "r1-1"]


async def test_choices_on_one_node_all_go_there() -> None:
    node = Node()
    table = NodeTable(version=1, nodes=(view("a"),))
    events = choice_events(forwarder({"a": node}), table, REQUEST, 3, ROUTE, lambda _: None)
    routed, rest = await started(events, 3)
    assert {r.node_id for r in routed} == {"a"}
    finished = [i.index for i in await drain(rest) if isinstance(i.event, Finished)]
    assert sorted(finished) == [0, 1, 2] and len(node.requests) == 3


async def test_a_choice_that_cannot_be_routed_raises_before_anything_is_sent() -> None:
    table = NodeTable(version=1, nodes=())
    events = choice_events(forwarder({}), table, REQUEST, 2, ROUTE, lambda _: None)
    with pytest.raises(ModelNotFound):
        await started(events, 2)


class Scripted:
    """A stream of forwarder events; remembers whether it was closed before its end."""

    def __init__(self, script: Sequence[ForwardEvent | float]) -> None:
        self.script = script
        self.closed_early = False

    async def events(self) -> AsyncGenerator[ForwardEvent, None]:
        ended = False
        try:
            for item in self.script:
                if isinstance(item, float):
                    await asyncio.sleep(item)
                else:
                    yield item
            ended = True
        finally:
            self.closed_early = not ended


ROUTED = Routed(NodeId("a"), 1)


async def test_closing_the_interleaving_closes_every_stream() -> None:
    fast = Scripted([ROUTED, Delta("x", 1), 5.0, Finished("stop", usage())])
    slow = Scripted([0.05, ROUTED, 5.0, Finished("stop", usage())])
    events = interleave([fast.events(), slow.events()])
    routed, rest = await started(events, 2)
    assert len(routed) == 2
    first = await anext(rest)
    assert first == Sampled(0, Delta("x", 1))  # it came while choice 1 was being routed
    await rest.aclose()
    assert fast.closed_early and slow.closed_early


def chat_request(**fields: Any) -> ChatCompletionRequest:
    body = {"model": "demo", "messages": [{"role": "user", "content": "hi"}], **fields}
    return parse_request(ChatCompletionRequest, json.dumps(body))


async def sampled(items: Sequence[tuple[int, ForwardEvent]]) -> AsyncGenerator[Sampled, None]:
    for index, event in items:
        yield Sampled(index, event)


FAILED = StreamFailed("node a failed mid-stream: gone", usage(3))
TWO_CHOICES: list[tuple[int, ForwardEvent]] = [
    (0, Delta("A", 1)),
    (1, ToolCallDelta(index=0, id="call_1", name="f")),
    (1, ToolCallDelta(index=0, arguments='{"x":', tokens=2)),
    (0, Finished("stop", usage(1))),
    (1, ToolCallDelta(index=0, arguments=" 1}", tokens=1)),
    (1, ToolCallDelta(index=0, done=True)),
    (1, Finished("tool_calls", usage(3))),
]


async def test_collected_choices_become_one_answer() -> None:
    req = chat_request(n=2)
    response = await collect(req, "r1", 1, sampled(TWO_CHOICES), {})
    body = json.loads(bytes(response.body))
    first, second = body["choices"]
    assert (first["index"], first["message"]["content"], first["finish_reason"]) == (0, "A", "stop")
    assert second["message"]["content"] is None and second["finish_reason"] == "tool_calls"
    assert second["message"]["tool_calls"][0]["function"] == {"name": "f", "arguments": '{"x": 1}'}
    assert body["usage"]["completion_tokens"] == 4


async def test_collecting_waits_for_every_choice() -> None:
    with pytest.raises(UpstreamFailed, match="without finishing"):
        await collect(chat_request(n=2), "r1", 1, sampled(TWO_CHOICES[:4]), {})


async def test_one_choice_failing_fails_the_whole_answer() -> None:
    failing = [*TWO_CHOICES[:3], (1, FAILED), *TWO_CHOICES[3:]]
    with pytest.raises(UpstreamFailed, match="gone"):
        await collect(chat_request(n=2), "r1", 1, sampled(failing), {})
    frames = b"".join(
        [f async for f in sse_frames(chat_request(n=2, stream=True), "r1", 1, sampled(failing))]
    )
    payloads = [
        json.loads(e[6:]) for e in frames.decode().split("\n\n") if e[6:] not in ("", "[DONE]")
    ]
    assert payloads[-1]["error"]["message"] == "node a failed mid-stream: gone"
    assert not any(p.get("choices") and p["choices"][0]["finish_reason"] for p in payloads)


async def test_streamed_choices_end_once_with_usage() -> None:
    req = chat_request(n=2, stream=True, stream_options={"include_usage": True})
    frames = b"".join([f async for f in sse_frames(req, "r1", 1, sampled(TWO_CHOICES))])
    assert frames.count(b"data: [DONE]") == 1
    last = json.loads(frames.decode().split("\n\n")[-3][6:])
    assert last["choices"] == [] and last["usage"]["completion_tokens"] == 4


async def test_a_single_choice_stream_is_plain_events() -> None:
    req = parse_request(
        CompletionRequest, json.dumps({"model": "demo", "prompt": "x", "stream": True})
    )

    async def plain() -> AsyncGenerator[ForwardEvent, None]:
        yield Delta("ab", 1)
        yield Finished("stop", usage(1))

    frames = b"".join([f async for f in sse_frames(req, "r1", 1, plain())])
    assert b'"text":"ab","index":0' in frames and frames.endswith(b"data: [DONE]\n\n")
