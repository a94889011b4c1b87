"""The endpoint behind Serve's HTTP proxy: what `cluster up --gateway-replicas 2` runs.

With one gateway replica the replica itself listens on the endpoint's port; with several,
Serve's proxy sits in front of them. Streams are sent from the request's own task and rely on
Serve to cancel it when the client goes away (cluster/gateway/front.py), so both ways in are tested
for that: test_cluster.py covers the first, this module the proxy.
"""

from __future__ import annotations

import concurrent.futures
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from cluster.gateway.header_deadline import HEADER_TIMEOUT_S
from tests.harness import (
    AgentProcess,
    ClusterProcess,
    leave_mid_stream,
    peered_office,
    share_models,
    trickle_headers,
    wait_for,
)

pytestmark = pytest.mark.timeout(600)


@pytest.fixture(scope="module")
def office(
    tmp_path_factory: pytest.TempPathFactory, demo_model_dir: Path
) -> Iterator[tuple[ClusterProcess, list[AgentProcess]]]:
    """One agent serving `demo`, and a cluster with two gateway replicas behind the proxy."""
    root = tmp_path_factory.mktemp("proxied")
    agent = AgentProcess(
        share_models(root / "agent", demo_model_dir.parent),
        name="agent",
        args=("--model", "demo", "--no-mdns"),
    )
    cluster = ClusterProcess(root / "head")
    cluster.data_dir.mkdir()
    with peered_office(cluster, [agent], extra_args=("--gateway-replicas", "2")) as office:
        yield office


def test_streaming_through_the_proxy(office: tuple[ClusterProcess, list[AgentProcess]]) -> None:
    client = openai.OpenAI(base_url=f"{office[0].url}/v1", api_key="unused", max_retries=0)
    chunks = list(
        client.chat.completions.create(
            model="demo",
            messages=[{"role": "user", "content": "Count to five."}],
            max_tokens=8,
            temperature=0,  # greedy: the demo model closes its thought at once and answers
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert chunks[0].choices[0].delta.role == "assistant"
    assert chunks[-1].usage is not None and 0 < chunks[-1].usage.completion_tokens <= 8
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text


def test_a_client_that_leaves_the_proxy_cancels_the_generation(
    office: tuple[ClusterProcess, list[AgentProcess]],
) -> None:
    assert leave_mid_stream(office[0]) < 5


def requests_counted(cluster: ClusterProcess) -> float:
    """The sum of /metrics' request counter, as whichever replica answers shows it."""
    text = httpx.get(f"{cluster.url}/metrics", timeout=10).text
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("meterless:requests_total{")
    )


def test_metrics_count_every_replica_s_requests(
    office: tuple[ClusterProcess, list[AgentProcess]],
) -> None:
    cluster = office[0]

    def settled() -> bool:  # the module's earlier requests all counted
        first = requests_counted(cluster)
        time.sleep(1.0)
        return requests_counted(cluster) == first

    wait_for(settled, 20, "the earlier requests counted")
    before = requests_counted(cluster)
    for _ in range(8):  # the proxy spreads them over both replicas
        r = httpx.post(
            f"{cluster.url}/v1/completions",
            json={"model": "demo", "prompt": "x", "max_tokens": 1},
            timeout=60,
        )
        assert r.status_code == 200, r.text
    wait_for(lambda: requests_counted(cluster) == before + 8, 10, "the eight requests counted")
    assert [requests_counted(cluster) for _ in range(6)] == [before + 8] * 6


def test_the_proxy_closes_a_connection_trickling_its_headers(
    office: tuple[ClusterProcess, list[AgentProcess]],
) -> None:
    cluster = office[0]
    slack = 10.0
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        slow = pool.submit(trickle_headers, cluster.port, HEADER_TIMEOUT_S + slack)
        while not slow.done():  # others are answered meanwhile
            assert httpx.get(f"{cluster.url}/health", timeout=10).status_code == 200
            time.sleep(0.5)
        seconds, answer = slow.result()
    assert HEADER_TIMEOUT_S - 1 <= seconds < HEADER_TIMEOUT_S + slack
    assert answer.startswith(b"HTTP/1.1 408 "), answer
