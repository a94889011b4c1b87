"""`POST /v1/embeddings` with the official `openai` SDK against one real cluster of two nodes:
MLX serving `demo` (every MLX model embeds), and vLLM (the CPU build) serving `demo` to generate
and `demo-embed`, the same weights loaded with runner=pooling. So `demo`'s embeddings must come
from the MLX node, never from vLLM's generate-only `demo`; `demo-embed`'s from vLLM."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest

from cluster.node_client import NodeClient, NodeError, NodeModelMissing, NodeRejected
from node_agent.types import EMBEDDINGS, LoadStage
from tests.harness import AgentProcess, ClusterProcess, cli, cluster_of, wait_for

pytestmark = pytest.mark.timeout(900)

POOLED = "demo-embed"
TEXTS = ["The cat sat on the mat.", "A quiet harbour at dawn.", "Prices rose in March."]


async def _load_pooled(address: str) -> None:
    client = NodeClient(address)
    try:
        async for event in client.load_model("demo", name=POOLED, options={"runner": "pooling"}):
            assert event.stage is not LoadStage.FAILED, event.message
    finally:
        await client.close()


async def _unload_pooled(address: str) -> None:
    client = NodeClient(address)
    try:
        await client.unload_model(POOLED, timeout=60)
    finally:
        await client.close()


@pytest.fixture(scope="module")
def cluster(
    engine_agents: dict[str, AgentProcess], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ClusterProcess]:
    """Both engine agents in one cluster, the vLLM one also holding the pooled model."""
    vllm = engine_agents["vllm"]
    asyncio.run(_load_pooled(vllm.address))
    try:
        head = cluster_of(tmp_path_factory.mktemp("embeddings"), *engine_agents.values())
        try:
            yield head
        finally:
            head.stop()
    finally:  # the agents are shared with other modules: leave them as they were
        asyncio.run(_unload_pooled(vllm.address))


@pytest.fixture(scope="module")
def node_names(cluster: ClusterProcess) -> dict[str, str]:
    """Node id -> the agent's name."""
    return {n["node_id"]: n["name"] for n in cluster.nodes()}


@pytest.fixture
def client(cluster: ClusterProcess) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{cluster.url}/v1", api_key="unused", max_retries=0)


def embedded(client: openai.OpenAI, model: str, texts: str | list[str], **kw: Any) -> Any:
    """The answer and the name of the node that made it."""
    raw = client.embeddings.with_raw_response.create(model=model, input=texts, **kw)
    return raw.parse(), raw.headers["x-meterless-node"]


def norm(v: list[float]) -> float:
    return math.sqrt(sum(x * x for x in v))


@pytest.mark.parametrize(("model", "engine"), [("demo", "mlx"), (POOLED, "vllm")])
def test_a_batch_gives_one_unit_vector_per_input_from_the_right_engine(
    client: openai.OpenAI, node_names: dict[str, str], model: str, engine: str
) -> None:
    for _ in range(4):  # with two candidates the router would have taken turns by now
        out, node = embedded(client, model, TEXTS, encoding_format="float")
        assert node_names[node] == f"{engine}-node"
    assert out.object == "list" and out.model == model
    assert [d.index for d in out.data] == [0, 1, 2]
    assert len({len(d.embedding) for d in out.data}) == 1 and len(out.data[0].embedding) > 1
    assert all(math.isclose(norm(d.embedding), 1.0, abs_tol=1e-4) for d in out.data)
    singles = [embedded(client, model, t, encoding_format="float")[0] for t in TEXTS]
    assert out.usage.prompt_tokens == out.usage.total_tokens
    assert out.usage.prompt_tokens == sum(s.usage.prompt_tokens for s in singles) > 0
    for one, batched in zip(singles, out.data, strict=True):  # alone or batched, the same
        assert one.data[0].embedding == pytest.approx(batched.embedding, abs=1e-5)


@pytest.mark.parametrize("model", ["demo", POOLED])
def test_base64_and_float_agree_and_the_same_text_gives_the_same_vector(
    client: openai.OpenAI, model: str
) -> None:
    floats, _ = embedded(client, model, TEXTS[:2], encoding_format="float")
    packed, _ = embedded(client, model, TEXTS[:2])  # the SDK asks for base64 and unpacks it
    again, _ = embedded(client, model, TEXTS[:2], encoding_format="float")
    for f, b, a in zip(floats.data, packed.data, again.data, strict=True):
        assert list(b.embedding) == pytest.approx(f.embedding, rel=1e-6, abs=1e-9)
        assert a.embedding == f.embedding
    assert floats.data[0].embedding != floats.data[1].embedding


def test_both_engines_pool_the_same_model_alike(client: openai.OpenAI) -> None:
    mlx, _ = embedded(client, "demo", TEXTS[0], encoding_format="float")
    vllm, _ = embedded(client, POOLED, TEXTS[0], encoding_format="float")
    a, b = mlx.data[0].embedding, vllm.data[0].embedding
    assert len(a) == len(b) and sum(x * y for x, y in zip(a, b, strict=True)) > 0.99


@pytest.mark.parametrize(
    ("kw", "param"),
    [
        ({"input": [[1, 2, 3]]}, "input"),
        ({"input": ["fine", ""]}, "input.1"),
        ({"input": ["x"] * 257}, "input"),
        ({"input": "hi", "dimensions": 7}, "dimensions"),
        ({"input": "hi", "encoding_format": "int8"}, "encoding_format"),
    ],
)
def test_a_bad_request_is_a_400_with_its_param(
    client: openai.OpenAI, kw: dict[str, Any], param: str
) -> None:
    with pytest.raises(openai.BadRequestError) as err:
        client.embeddings.create(model="demo", **kw)
    assert err.value.status_code == 400
    assert (err.value.body or {}).get("param") == param  # type: ignore[union-attr]


def test_the_pooled_model_generates_nothing(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as err:
        client.completions.create(model=POOLED, prompt="Once upon", max_tokens=4)
    assert "runner=pooling" in err.value.message


def test_models_list_embeddings_where_a_node_makes_them(cluster: ClusterProcess) -> None:
    cards = httpx.get(f"{cluster.url}/v1/models", timeout=10).json()["data"]
    capabilities = {c["id"]: set(c["capabilities"]) for c in cards}
    assert EMBEDDINGS in capabilities["demo"] and capabilities[POOLED] == {EMBEDDINGS}


def test_an_alias_reaches_the_model_it_names(
    cluster: ClusterProcess, client: openai.OpenAI, node_names: dict[str, str]
) -> None:
    assert cli(cluster, "alias", "text-embedding-3-small", POOLED).returncode == 0
    try:
        out, node = wait_for(
            lambda: embedded(client, "text-embedding-3-small", "hi", encoding_format="float"),
            10,
            "the gateway to know the alias",
        )
        direct, _ = embedded(client, POOLED, "hi", encoding_format="float")
        assert out.model == "text-embedding-3-small" and node_names[node] == "vllm-node"
        assert out.data[0].embedding == direct.data[0].embedding
    finally:
        cli(cluster, "alias", "rm", "text-embedding-3-small")


async def _refusals(address: str) -> list[type[NodeError]]:
    client = NodeClient(address)
    got: list[type[NodeError]] = []
    try:
        for model, inputs in (("demo", ["hi"]), ("absent", ["hi"]), (POOLED, [""])):
            try:
                await client.embed(model, inputs)
            except NodeError as exc:
                got.append(type(exc))
    finally:
        await client.close()
    return got


def test_the_agent_refuses_what_it_cannot_embed(
    cluster: ClusterProcess, engine_agents: dict[str, AgentProcess]
) -> None:
    """vLLM's generate-only `demo`: InvalidRequest; an absent model: FAILED_PRECONDITION; an
    empty input: InvalidRequest (the gateway refuses it first)."""
    refused = asyncio.run(_refusals(engine_agents["vllm"].address))
    assert refused == [NodeRejected, NodeModelMissing, NodeRejected]
