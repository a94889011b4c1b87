"""One endpoint over real agents: `cluster up` (Ray Serve) in front of two demo-model agents."""

from __future__ import annotations

import collections
import concurrent.futures
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from node_agent.demo_model import CONTEXT
from tests.harness import (
    AgentProcess,
    ClusterProcess,
    leave_mid_stream,
    peered_office,
    share_models,
)

pytestmark = pytest.mark.timeout(600)


@pytest.fixture(scope="module")
def office(
    tmp_path_factory: pytest.TempPathFactory, demo_model_dir: Path
) -> Iterator[tuple[ClusterProcess, list[AgentProcess]]]:
    """Two agents serving `demo`, and a cluster that knows them as static peers."""
    root = tmp_path_factory.mktemp("office")
    agents = [
        AgentProcess(
            share_models(root / f"agent{i}", demo_model_dir.parent),
            name=f"agent{i}",
            args=("--model", "demo", "--no-mdns"),
        )
        for i in range(2)
    ]
    cluster = ClusterProcess(root / "head")
    cluster.data_dir.mkdir()
    with peered_office(cluster, agents) as office:
        yield office


@pytest.fixture
def client(office: tuple[ClusterProcess, list[AgentProcess]]) -> openai.OpenAI:
    """The official client, pointed at the endpoint."""
    return openai.OpenAI(base_url=f"{office[0].url}/v1", api_key="unused", max_retries=0)


def test_models_lists_demo(client: openai.OpenAI) -> None:
    assert [m.id for m in client.models.list()] == ["demo"]


def test_chat_non_streaming(client: openai.OpenAI) -> None:
    r = client.chat.completions.create(
        model="demo", messages=[{"role": "user", "content": "Say hello."}], max_tokens=12
    )
    assert r.object == "chat.completion"
    assert r.choices[0].message.role == "assistant"
    assert r.choices[0].finish_reason in ("stop", "length")
    assert r.usage is not None and r.usage.prompt_tokens > 0
    assert 0 < r.usage.completion_tokens <= 12
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens


def test_chat_streaming_with_usage(client: openai.OpenAI) -> None:
    stream = client.chat.completions.create(
        model="demo",
        messages=[{"role": "user", "content": "Count to five."}],
        max_tokens=10,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert finishes[-1] in ("stop", "length") and all(f is None for f in finishes[:-1])
    usage = chunks[-1].usage
    assert chunks[-1].choices == [] and usage is not None
    assert 0 < usage.completion_tokens <= 10


def test_completions_both_ways(client: openai.OpenAI) -> None:
    whole = client.completions.create(
        model="demo", prompt="Once upon a time", max_tokens=8, temperature=0
    )
    assert whole.object == "text_completion" and whole.usage is not None
    streamed = "".join(
        c.choices[0].text
        for c in client.completions.create(
            model="demo", prompt="Once upon a time", max_tokens=8, temperature=0, stream=True
        )
        if c.choices
    )
    assert streamed == whole.choices[0].text  # greedy: the same text either way


def test_curl_style_sse(office: tuple[ClusterProcess, list[AgentProcess]]) -> None:
    body = {
        "model": "demo",
        "messages": [{"role": "user", "content": "hi"}],
        "max_tokens": 4,
        "stream": True,
    }
    with httpx.stream("POST", f"{office[0].url}/v1/chat/completions", json=body, timeout=60) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        lines = [line for line in r.iter_lines() if line]
    assert all(line.startswith("data: ") for line in lines)
    assert lines[-1] == "data: [DONE]"


def test_bad_requests_are_openai_shaped_400s(
    office: tuple[ClusterProcess, list[AgentProcess]], client: openai.OpenAI
) -> None:
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(
            model="demo", messages=[{"role": "user", "content": "x"}], temperature=5
        )
    assert err.value.status_code == 400 and err.value.param == "temperature"
    for raw in (b"{not json", b"[]", b'{"model": "demo"}', b'{"model": 3, "messages": []}'):
        r = httpx.post(
            f"{office[0].url}/v1/chat/completions",
            content=raw,
            headers={"content-type": "application/json"},
            timeout=10,
        )
        assert r.status_code == 400, raw
        assert set(r.json()["error"]) == {"message", "type", "param", "code"}
    for path in ("/v1/chat/completions", "/v1/completions"):
        r = httpx.get(f"{office[0].url}{path}", timeout=10)
        assert r.status_code == 405 and r.json()["error"]["code"] == "method_not_allowed"


def test_prompt_too_long_is_400(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as err:
        client.completions.create(model="demo", prompt="word " * (CONTEXT + 100), max_tokens=4)
    assert "context" in err.value.message or "long" in err.value.message


def test_unknown_model_is_404(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as err:
        client.chat.completions.create(
            model="gpt-nope", messages=[{"role": "user", "content": "x"}]
        )
    assert err.value.code == "model_not_found"


def test_both_nodes_take_traffic(office: tuple[ClusterProcess, list[AgentProcess]]) -> None:
    cluster, _ = office
    body = {"model": "demo", "prompt": "The weather today", "max_tokens": 24}

    def one(i: int) -> str:
        r = httpx.post(f"{cluster.url}/v1/completions", json={**body, "seed": i}, timeout=120)
        assert r.status_code == 200, r.text
        return r.headers["x-meterless-node"]

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        served = collections.Counter(pool.map(one, range(16)))
    assert len(served) == 2, served


def test_draining_every_node_gives_503_with_retry_after(
    office: tuple[ClusterProcess, list[AgentProcess]], client: openai.OpenAI
) -> None:
    cluster, agents = office
    names = [a.name for a in agents]
    try:
        for name in names:
            r = httpx.post(
                f"{cluster.url}/admin/nodes/{name}/drain", timeout=10, headers=cluster.admin_headers
            )
            assert r.status_code == 200 and r.json()["node"]["state"] == "draining"
        r = httpx.post(
            f"{cluster.url}/v1/completions",
            json={"model": "demo", "prompt": "x", "max_tokens": 2},
            timeout=10,
        )
        assert r.status_code == 503 and int(r.headers["retry-after"]) >= 1
        assert r.json()["error"]["code"] == "no_capacity"
    finally:
        for name in names:
            httpx.post(
                f"{cluster.url}/admin/nodes/{name}/uncordon",
                timeout=10,
                headers=cluster.admin_headers,
            )
    r = httpx.post(
        f"{cluster.url}/admin/nodes/nobody/drain", timeout=10, headers=cluster.admin_headers
    )
    assert r.status_code == 404 and "unknown node" in r.json()["error"]["message"]
    back = client.completions.create(model="demo", prompt="back", max_tokens=2)  # uncordoned
    assert back.usage is not None and 0 < back.usage.completion_tokens <= 2


def test_cluster_nodes_cli(office: tuple[ClusterProcess, list[AgentProcess]]) -> None:
    import json
    import subprocess
    import sys

    cluster, agents = office
    out = subprocess.run(
        [sys.executable, "-m", "cluster.cli", "nodes", "--json", "--url", cluster.url],
        capture_output=True,
        text=True,
        check=True,
        env=cluster.env,
    ).stdout
    nodes = json.loads(out)["nodes"]
    assert sorted(n["name"] for n in nodes) == sorted(a.name for a in agents)
    assert all(n["models"] == ["demo"] and n["address"] for n in nodes)
    table = subprocess.run(
        [sys.executable, "-m", "cluster.cli", "nodes", "--url", cluster.url],
        capture_output=True,
        text=True,
        check=True,
        env={**cluster.env, "COLUMNS": "160", "PATH": ""},
    ).stdout
    assert "agent0" in table and "ready" in table
    bad = subprocess.run(
        [sys.executable, "-m", "cluster.cli", "nodes", "--url", "http://127.0.0.1:9"],
        capture_output=True,
        text=True,
    )
    assert bad.returncode == 1 and bad.stderr.count("\n") == 1 and "Traceback" not in bad.stderr


def test_a_client_that_disconnects_cancels_the_generation_on_the_node(
    office: tuple[ClusterProcess, list[AgentProcess]],
) -> None:
    assert leave_mid_stream(office[0]) < 5


def test_cluster_models_cli(office: tuple[ClusterProcess, list[AgentProcess]]) -> None:
    import json
    import subprocess
    import sys

    cluster, agents = office
    out = subprocess.run(
        [sys.executable, "-m", "cluster.cli", "models", "--json", "--url", cluster.url],
        capture_output=True,
        text=True,
        check=True,
        env=cluster.env,
    ).stdout
    (demo,) = json.loads(out)["models"]
    assert demo["model"] == "demo"
    assert sorted(demo["ready_nodes"]) == sorted(a.name for a in agents)


def test_up_on_a_port_in_use_says_so_in_one_line(
    office: tuple[ClusterProcess, list[AgentProcess]], tmp_path: Path
) -> None:
    import subprocess
    import sys

    cluster, _ = office
    second = ClusterProcess(tmp_path / "second")
    second.data_dir.mkdir()
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "cluster.cli",
            "up",
            "--port",
            str(cluster.port),
            "--no-local-agent",
            "--insecure",
        ],
        capture_output=True,
        text=True,
        env=second.env,
        timeout=60,
    )
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines()[-1] == (
        f"cluster up: port {cluster.port} on 127.0.0.1 is in use by another program; "
        "choose another with --port"
    )
