"""A head whose ledger cannot be opened: /health and `cluster up` say why, and the controller
starts by itself once the file is fixed."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from tests.harness import AgentProcess, ClusterProcess, share_models, wait_for

pytestmark = pytest.mark.timeout(600)


def health(cluster: ClusterProcess) -> tuple[int, dict[str, object]]:
    """/health's status and body."""
    r = httpx.get(f"{cluster.url}/health", timeout=5)
    return r.status_code, r.json()


def test_a_corrupt_ledger_is_reported_then_the_start_is_retried(
    tmp_path: Path, demo_model_dir: Path
) -> None:
    agent = AgentProcess(
        share_models(tmp_path / "agent", demo_model_dir.parent),
        name="agent",
        args=("--model", "demo", "--no-mdns"),
    )
    cluster = ClusterProcess(tmp_path / "head")
    cluster.data_dir.mkdir()
    ledger = cluster.data_dir / "ledger.sqlite3"
    ledger.write_bytes(b"this is not a database " * 200)
    try:
        agent.start()
        cluster.args = ("--no-local-agent", "--no-mdns", "--peer", agent.address)
        cluster.start(want_models=0)  # as soon as the endpoint answers at all
        _, body = wait_for(
            lambda: (h := health(cluster))[0] == 503 and h, 120, "/health to say why"
        )
        assert "controller cannot start" in str(body["reason"])
        assert "not a database" in str(body["reason"])
        ledger.unlink()  # the admin moves the broken file away
        wait_for(lambda: health(cluster)[1].get("models") == ["demo"], 120, "demo served")
        log = (cluster.data_dir / "cluster.log").read_text()
        assert "not ready: the controller cannot start" in log
    finally:
        cluster.stop()
        agent.stop()
