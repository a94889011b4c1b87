"""A node killed under streaming load: no request that had not started streaming fails."""

from __future__ import annotations

import concurrent.futures
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.harness import AgentProcess, ClusterProcess, peered_office, share_models, wait_for

pytestmark = pytest.mark.timeout(600)


@dataclass
class Outcome:
    """What one client saw of one streamed request."""

    node: str = ""
    status: int = 0
    tokens_seen: int = 0
    done: bool = False
    error_event: bool = False
    exception: str = ""
    usage: dict | None = None  # type: ignore[type-arg]


def stream_once(url: str, i: int) -> Outcome:
    """One streamed chat completion, read as a client would."""
    out = Outcome()
    body = {
        "model": "demo",
        "max_tokens": 40,
        "stream": True,
        "seed": i,
        "stream_options": {"include_usage": True},
        "messages": [{"role": "user", "content": f"Tell me about request {i}."}],
    }
    try:
        with httpx.stream("POST", f"{url}/v1/chat/completions", json=body, timeout=60) as r:
            out.status, out.node = r.status_code, r.headers.get("x-meterless-node", "")
            for line in r.iter_lines():
                if line == "data: [DONE]":
                    out.done = True
                elif line.startswith("data: "):
                    payload = json.loads(line[6:])
                    out.error_event |= "error" in payload
                    out.tokens_seen += bool(payload.get("choices"))
                    out.usage = payload.get("usage") or out.usage
    except httpx.HTTPError as exc:
        out.exception = repr(exc)
    return out


def load(
    url: str, stop: threading.Event, results: list[Outcome], workers: int = 6
) -> list[threading.Thread]:
    """Continuous streaming load from `workers` clients until `stop` is set."""

    def work(w: int) -> None:
        i = 0
        while not stop.is_set():
            results.append(stream_once(url, w * 10_000 + i))
            i += 1

    threads = [threading.Thread(target=work, args=(w,), daemon=True) for w in range(workers)]
    for t in threads:
        t.start()
    return threads


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
