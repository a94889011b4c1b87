"""A node killed under load: no request that had not started streaming fails, and a whole
(non-streamed) answer whose node dies mid-generation is made again by another node."""

from __future__ import annotations

import concurrent.futures
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import anthropic
import openai
import pytest

from tests.harness import (
    AgentProcess,
    ClusterProcess,
    load,
    peered_office,
    share_models,
    stream_once,
    wait_for,
)

pytestmark = pytest.mark.timeout(600)


@pytest.fixture(scope="module")
def office(
    tmp_path_factory: pytest.TempPathFactory, demo_model_dir: Path
) -> Iterator[tuple[ClusterProcess, list[AgentProcess]]]:
    """Three agents behind one cluster."""
    root = tmp_path_factory.mktemp("failover")
    agents = [
        AgentProcess(
            share_models(root / f"agent{i}", demo_model_dir.parent),
            name=f"node{i}",
            args=("--model", "demo", "--no-mdns"),
        )
        for i in range(3)
    ]
    cluster = ClusterProcess(root / "head")
    cluster.data_dir.mkdir()
    with peered_office(cluster, agents) as office:
        yield office


def node_state(cluster: ClusterProcess, name: str) -> str:
    """The state the admin API shows for the node called `name`."""
    return next(n["state"] for n in cluster.nodes() if n["name"] == name)


def test_killed_node_loses_no_unstarted_request_and_comes_back(
    office: tuple[ClusterProcess, list[AgentProcess]],
) -> None:
    cluster, agents = office
    victim = agents[0]
    stop, results = threading.Event(), []
    threads = load(cluster.url, stop, results)
    wait_for(lambda: len(results) >= 6, 60, "the load to get going")
    victim.kill()
    killed_at = time.monotonic()
    wait_for(lambda: node_state(cluster, victim.name) == "lost", 10, "the node to be marked lost")
    lost_after = time.monotonic() - killed_at
    time.sleep(2)  # keep the load running on the survivors for a while
    stop.set()
    for t in threads:
        t.join(timeout=90)

    broken = [r for r in results if not (r.status == 200 and r.done and not r.error_event)]
    # Only streams that had already started on the killed node may fail, and only in-band.
    for r in broken:
        assert r.status == 200 and r.tokens_seen > 0 and r.error_event and r.done, r
        assert r.usage and r.usage["prompt_tokens"] > 0 and r.usage["completion_tokens"] > 0, r
    victim_id = next(n["node_id"] for n in cluster.nodes() if n["name"] == victim.name)
    assert all(r.node == victim_id for r in broken)
    assert lost_after < 5.0, f"marked lost after {lost_after:.1f}s"
    assert len(results) - len(broken) >= 6

    victim.start()  # same port, same data dir: the same node
    wait_for(lambda: node_state(cluster, victim.name) == "ready", 20, "the node to be ready again")
    with concurrent.futures.ThreadPoolExecutor(6) as pool:  # enough load to need all three
        served = {
            o.node for o in pool.map(lambda i: stream_once(cluster.url, 900_000 + i), range(18))
        }
    assert victim_id in served, "the node that came back takes traffic again"


@pytest.fixture(scope="module")
def slow_pair(
    tmp_path_factory: pytest.TempPathFactory, demo_model_dir: Path
) -> Iterator[tuple[ClusterProcess, list[AgentProcess]]]:
    """Two agents slowed to 5 decode steps a second, so that an answer takes seconds."""
    root = tmp_path_factory.mktemp("whole-failover")
    agents = [
        AgentProcess(
            share_models(root / f"agent{i}", demo_model_dir.parent),
            name=f"slow{i}",
            args=("--model", "demo", "--no-mdns", "--max-steps-per-s", "5"),
        )
        for i in range(2)
    ]
    cluster = ClusterProcess(root / "head")
    cluster.data_dir.mkdir()
    with peered_office(cluster, agents) as office:
        yield office


def killed_mid_generation(
    office: tuple[ClusterProcess, list[AgentProcess]], send: Callable[[], Any]
) -> tuple[Any, str]:
    """`send()`'s result when the node generating its answer is killed partway through, and
    that node's id; the node is started again afterwards."""
    cluster, agents = office

    def generating() -> list[dict[str, Any]]:
        return [n for n in cluster.nodes() if n["running"]]

    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        answer = pool.submit(send)
        [busy] = wait_for(generating, 30, "a node to be generating the answer")
        time.sleep(1.0)  # a few tokens made, nothing sent: a whole answer waits for all
        victim = next(a for a in agents if a.name == busy["name"])
        assert not answer.done(), "the answer was made before its node could be killed"
        victim.kill()
        try:
            return answer.result(timeout=120), busy["node_id"]
        finally:
            victim.start()
            wait_for(lambda: node_state(cluster, victim.name) == "ready", 30, "the node back")


def test_a_whole_chat_completion_cut_off_by_its_node_is_answered_by_another(
    slow_pair: tuple[ClusterProcess, list[AgentProcess]],
) -> None:
    client = openai.OpenAI(base_url=f"{slow_pair[0].url}/v1", api_key="unused", max_retries=0)
    raw, victim = killed_mid_generation(
        slow_pair,
        lambda: client.chat.completions.with_raw_response.create(
            model="demo",
            messages=[{"role": "user", "content": "Tell me a long story."}],
            max_tokens=150,
        ),
    )
    completion = raw.parse()
    assert raw.headers["x-meterless-node"] != victim
    assert completion.choices[0].finish_reason in ("stop", "length")
    assert completion.usage is not None and completion.usage.completion_tokens > 0


def test_a_whole_anthropic_message_cut_off_by_its_node_is_answered_by_another(
    slow_pair: tuple[ClusterProcess, list[AgentProcess]],
) -> None:
    client = anthropic.Anthropic(base_url=slow_pair[0].url, api_key="unused", max_retries=0)
    raw, victim = killed_mid_generation(
        slow_pair,
        lambda: client.messages.with_raw_response.create(
            model="demo",
            messages=[{"role": "user", "content": "Tell me a long story."}],
            max_tokens=150,
        ),
    )
    message = raw.parse()
    assert raw.headers["x-meterless-node"] != victim
    assert message.stop_reason in ("end_turn", "max_tokens")
    assert message.usage.output_tokens > 0
