"""Forwarder.embed: only nodes whose model makes embeddings are asked, a failed node is replaced,
a rejection is the client's 400, and each request leaves one ledger row. The nodes are scripted
stand-ins; the forwarder and router are real."""

from __future__ import annotations

from typing import Any

import pytest

from cluster.errors import InvalidRequest, ModelNotFound, NoCapacity
from cluster.gateway.forward import Forwarder, ForwardSettings
from cluster.gateway.routing import RouteRequest, make_router
from cluster.gateway.tally import RequestInfo, Tap
from cluster.ledger.rows import Outcome, UsageRow
from cluster.node_client import NodeError, NodePromptTooLong, NodeRejected, NodeUnavailable
from cluster.types import ModelName, ModelTraits, NodeId, NodeState, NodeTable, NodeView
from node_agent.types import EMBEDDINGS, TOOLS, Embeddings

M = ModelName("demo")
ROUTE = RouteRequest(M, 1)
INFO = RequestInfo(request_id="e1", model=M, endpoint="embeddings", stream=False)
ANSWER = Embeddings(vectors=[[0.6, 0.8]], prompt_tokens=3)


class Node:
    """A node client that answers Embed with `answer` (raised if it is an error)."""

    def __init__(self, answer: Embeddings | NodeError) -> None:
        self.answer = answer
        self.asked: list[tuple[str, list[str]]] = []

    async def embed(self, model: str, inputs: list[str]) -> Embeddings:
        self.asked.append((model, inputs))
        if isinstance(self.answer, NodeError):
            raise self.answer
        return self.answer


class Pool:
    def __init__(self, nodes: dict[str, Node]) -> None:
        self.nodes = nodes

    def get(self, address: str, *, plaintext: bool = False) -> Node:
        return self.nodes[address]


def office(nodes: dict[str, tuple[frozenset[str], Node]]) -> tuple[Forwarder, NodeTable]:
    """A round-robin forwarder over one ready node per entry, its model with those capabilities."""
    views = tuple(
        NodeView(
            node_id=NodeId(n),
            name=n,
            address=n,
            engines=("mlx",),
            state=NodeState.READY,
            models=(M,),
            traits=((M, ModelTraits(capabilities=caps)),),
        )
        for n, (caps, _) in nodes.items()
    )
    pool: Any = Pool({n: node for n, (_, node) in nodes.items()})
    forwarder = Forwarder(make_router("round-robin"), pool, ForwardSettings(max_attempts=3))
    return forwarder, NodeTable(version=1, nodes=views)


def tapped() -> tuple[Tap, list[UsageRow]]:
    rows: list[UsageRow] = []
    return Tap(INFO, lambda values: rows.append(UsageRow.of(values))), rows


EMBEDS = frozenset({EMBEDDINGS})


async def test_only_a_node_whose_model_embeds_is_asked() -> None:
    generator, embedder = Node(ANSWER), Node(ANSWER)
    forwarder, table = office({"gen": (frozenset({TOOLS}), generator), "emb": (EMBEDS, embedder)})
    for _ in range(4):  # round-robin would take turns, were both candidates
        node_id, got = await forwarder.embed(table, M, ["hi"], ROUTE)
        assert (node_id, got) == ("emb", ANSWER)
    assert generator.asked == [] and embedder.asked == [("demo", ["hi"])] * 4


async def test_a_request_leaves_one_row_with_its_prompt_tokens() -> None:
    forwarder, table = office({"n1": (EMBEDS, Node(ANSWER))})
    tap, rows = tapped()
    await forwarder.embed(table, M, ["a", "b"], ROUTE, tap)
    [row] = rows
    assert (row.endpoint, row.outcome, row.node_id, row.attempts) == (
        "embeddings",
        Outcome.OK,
        "n1",
        1,
    )
    assert (row.prompt_tokens, row.completion_tokens, row.ttft_s) == (3, 0, None)


async def test_a_node_that_fails_is_replaced_by_the_next() -> None:
    forwarder, table = office(
        {"n1": (EMBEDS, Node(NodeUnavailable("gone"))), "n2": (EMBEDS, Node(ANSWER))}
    )
    tap, rows = tapped()
    assert (await forwarder.embed(table, M, ["hi"], ROUTE, tap))[0] == "n2"
    [row] = rows
    assert (row.outcome, row.node_id, row.attempts) == (Outcome.FAILED_OVER, "n2", 2)


async def test_when_every_node_fails_it_is_a_503_and_an_error_row() -> None:
    forwarder, table = office({"n1": (EMBEDS, Node(NodeUnavailable("gone")))})
    tap, rows = tapped()
    with pytest.raises(NoCapacity):
        await forwarder.embed(table, M, ["hi"], ROUTE, tap)
    assert [r.outcome for r in rows] == [Outcome.ERROR]


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (NodeRejected("n1: input 0 is empty"), None),
        (NodePromptTooLong("n1: input 0 has 9 tokens"), "context_length_exceeded"),
    ],
)
async def test_a_rejection_is_the_clients_400_without_the_nodes_address(
    error: NodeError, code: str | None
) -> None:
    forwarder, table = office({"n1": (EMBEDS, Node(error)), "n2": (EMBEDS, Node(ANSWER))})
    with pytest.raises(InvalidRequest) as info:
        await forwarder.embed(table, M, [""], ROUTE)
    assert info.value.code == code and not info.value.message.startswith("n1")


async def test_a_model_no_node_embeds_is_a_400_naming_the_model() -> None:
    forwarder, table = office({"gen": (frozenset({TOOLS}), Node(ANSWER))})
    tap, rows = tapped()
    with pytest.raises(InvalidRequest) as info:
        await forwarder.embed(table, M, ["hi"], ROUTE, tap)
    assert info.value.param == "model" and "runner=pooling" in info.value.message
    assert [(r.outcome, r.node_id) for r in rows] == [(Outcome.ERROR, None)]


async def test_an_unknown_model_is_a_404() -> None:
    forwarder, table = office({"n1": (EMBEDS, Node(ANSWER))})
    with pytest.raises(ModelNotFound):
        await forwarder.embed(table, ModelName("elsewhere"), ["hi"], ROUTE)
