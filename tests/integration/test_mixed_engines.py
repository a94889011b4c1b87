"""An MLX agent and a vLLM agent behind one `cluster up`: one model name, both nodes serving it."""

from __future__ import annotations

import collections
import concurrent.futures
from collections.abc import Iterator
from pathlib import Path

import grpc
import openai
import pytest

from node_agent.proto import pb, pb_grpc
from tests.harness import AgentProcess, ClusterProcess, share_models, wait_for
from tests.integration.engines import require_vllm

pytestmark = pytest.mark.timeout(600)

Office = tuple[ClusterProcess, dict[str, AgentProcess]]


@pytest.fixture(scope="module")
def office(tmp_path_factory: pytest.TempPathFactory, demo_model_dir: Path) -> Iterator[Office]:
    """`demo` on one MLX agent and one vLLM agent, and a cluster that knows both as peers."""
    require_vllm()
    root = tmp_path_factory.mktemp("mixed")
    agents = {
        engine: AgentProcess(
            share_models(root / engine, demo_model_dir.parent),
            name=f"{engine}-node",
            args=("--model", "demo", "--engine", engine, "--no-mdns"),
        )
        for engine in ("mlx", "vllm")
    }
    cluster = ClusterProcess(root / "head")
    cluster.data_dir.mkdir()
    try:
        for agent in agents.values():
            agent.start(timeout=300)  # vLLM's start on a small CPU takes a while
        peers = [arg for a in agents.values() for arg in ("--peer", a.address)]
        cluster.args = ("--no-local-agent", "--no-mdns", *peers)
        cluster.start()
        wait_for(
            lambda: sum(n["state"] == "ready" for n in cluster.nodes()) == 2, 60, "both nodes ready"
        )
        yield cluster, agents
    finally:
        cluster.stop()
        for agent in agents.values():
            agent.stop()


def served_models(agent: AgentProcess) -> list[pb.ModelInfo]:
    """What the agent itself says it serves, and on which engine."""
    with grpc.insecure_channel(agent.address) as channel:
        reply = pb_grpc.AgentStub(channel).ListModels(pb.ListModelsRequest(), timeout=10)
    return list(reply.models)


def test_each_agent_serves_demo_on_its_own_engine(office: Office) -> None:
    _, agents = office
    for engine, agent in agents.items():
        assert [(m.name, m.engine) for m in served_models(agent)] == [("demo", engine)]


def test_the_client_sees_one_model_and_both_nodes_serve_it(office: Office) -> None:
    cluster, _ = office
    client = openai.OpenAI(base_url=f"{cluster.url}/v1", api_key="unused", max_retries=0)
    assert [m.id for m in client.models.list()] == ["demo"]
    names = {n["node_id"]: n["name"] for n in cluster.nodes()}
    messages = [{"role": "user", "content": "Tell me about the office."}]

    def one(i: int) -> tuple[str, int, int]:
        raw = client.chat.completions.with_raw_response.create(
            model="demo", messages=messages, max_tokens=24, temperature=0, seed=i
        )  # type: ignore[arg-type]
        completion = raw.parse()
        assert completion.usage is not None and completion.choices[0].message.content
        usage = completion.usage
        return names[raw.headers["x-meterless-node"]], usage.prompt_tokens, usage.completion_tokens

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        results = list(pool.map(one, range(24)))
    served = collections.Counter(node for node, _, _ in results)
    assert set(served) == {"mlx-node", "vllm-node"}, served
    # The same prompt is the same number of tokens on either engine: one tokenizer, one template.
    assert len({prompt for _, prompt, _ in results}) == 1
    assert all(0 < completion <= 24 for _, _, completion in results)


def test_a_stream_from_either_node_reads_the_same(office: Office) -> None:
    cluster, _ = office
    client = openai.OpenAI(base_url=f"{cluster.url}/v1", api_key="unused", max_retries=0)
    stream = client.chat.completions.create(
        model="demo",
        messages=[{"role": "user", "content": "Hello!"}],
        max_tokens=16,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    usage = chunks[-1].usage
    assert text and usage is not None and usage.completion_tokens == 16
