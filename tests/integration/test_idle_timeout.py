"""A node whose engine stalls after the first token: the stream ends with an error event in the
dialect's shape and the usage so far, instead of holding the client, and the ledger says so.

The agent is a real process, frozen with SIGSTOP once tokens are flowing: its TCP connection
stays up (the kernel still acknowledges), as with an engine wedged in a kernel or a lock."""

from __future__ import annotations

import json
import signal
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.harness import AgentProcess, ClusterProcess, peered_office, share_models, wait_for

pytestmark = pytest.mark.timeout(600)
Office = tuple[ClusterProcess, list[AgentProcess]]


@pytest.fixture(scope="module")
def office(tmp_path_factory: pytest.TempPathFactory, demo_model_dir: Path) -> Iterator[Office]:
    """One agent behind a cluster that waits at most 1 s between a stream's events."""
    root = tmp_path_factory.mktemp("idle")
    agent = AgentProcess(
        share_models(root / "agent", demo_model_dir.parent),
        name="stalling",
        args=("--model", "demo", "--no-mdns"),
    )
    cluster = ClusterProcess(root / "head")
    cluster.data_dir.mkdir()
    with peered_office(cluster, [agent], extra_args=("--idle-timeout", "1")) as office:
        yield office


def stalled_stream(cluster: ClusterProcess, agent: AgentProcess) -> list[dict[str, Any]]:
    """A long streamed chat completion whose node is frozen after its first token; every
    event the client got, read to the end of the stream. The node is thawed afterwards."""
    body = {
        "model": "demo",
        "max_tokens": 1500,
        "stream": True,
        "stream_options": {"include_usage": True},
        "messages": [{"role": "user", "content": "A very long story:"}],
    }
    assert agent.proc is not None
    events: list[dict[str, Any]] = []
    try:
        path = f"{cluster.url}/v1/chat/completions"
        with httpx.stream("POST", path, json=body, timeout=60) as r:
            assert r.status_code == 200
            for line in r.iter_lines():
                if line.startswith("data: {"):
                    events.append(json.loads(line[6:]))
                    if len(events) == 1:
                        agent.proc.send_signal(signal.SIGSTOP)
    finally:
        agent.proc.send_signal(signal.SIGCONT)
    return events


def ledger_row(cluster: ClusterProcess, request_id: str) -> dict[str, Any] | None:
    """The ledger's row for `request_id`, once the gateway has written it."""
    conn = sqlite3.connect(cluster.data_dir / "ledger.sqlite3")
    conn.row_factory = sqlite3.Row
    try:
        query = "SELECT * FROM requests WHERE request_id = ?"
        row = conn.execute(query, (request_id,)).fetchone()
        return dict(row) if row else None
    finally:
        conn.close()


def test_a_stalled_engine_ends_the_stream_with_an_error_and_the_usage_so_far(
    office: Office,
) -> None:
    cluster, [agent] = office
    events = stalled_stream(cluster, agent)

    errors = [e["error"] for e in events if "error" in e]
    assert len(errors) == 1 and "stalled" in errors[0]["message"], events[-3:]
    tokens = sum(bool(e.get("choices")) for e in events)
    assert tokens >= 1
    [usage] = [e["usage"] for e in events if e.get("usage")]
    assert usage["prompt_tokens"] > 0

    request_id = events[0]["id"].removeprefix("chatcmpl-")
    wait_for(lambda: ledger_row(cluster, request_id), 10, "the request's row in the ledger")
    row = ledger_row(cluster, request_id)
    assert row is not None
    assert row["outcome"] == "error" and row["completion_tokens"] >= 1, row
    wait_for(
        lambda: cluster.nodes()[0]["state"] == "ready", 30, "the thawed node to be ready again"
    )
