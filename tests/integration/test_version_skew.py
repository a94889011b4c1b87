"""Version skew: an agent of another protocol major, reached as a --peer over the real gRPC stubs,
is listed by `cluster nodes` as incompatible with both versions, and never routed to."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path

import grpc
import pytest

from node_agent.proto import PROTOCOL_VERSION, pb, pb_grpc
from tests.harness import ClusterProcess, wait_for

pytestmark = pytest.mark.timeout(300)


class FutureAgent(pb_grpc.AgentServicer):
    """An agent from a later major version: all it answers is Describe."""

    def Describe(self, request: object, context: grpc.ServicerContext) -> pb.NodeInfo:
        """Who it is, in protocol 2.0."""
        return pb.NodeInfo(
            node_id="f" * 32,
            hostname="future",
            agent_version="9.0.0",
            protocol_version="2.0",
            engines=["mlx"],
        )


@pytest.fixture
def future_agent() -> Iterator[str]:
    """The fake agent's address, served in plaintext (the cluster admits plaintext agents)."""
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    pb_grpc.add_AgentServicer_to_server(FutureAgent(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield f"127.0.0.1:{port}"
    finally:
        server.stop(grace=None)


def test_an_agent_of_another_major_is_listed_as_incompatible(
    tmp_path: Path, future_agent: str
) -> None:
    cluster = ClusterProcess(
        tmp_path, args=("--no-local-agent", "--no-mdns", "--peer", future_agent)
    )
    try:
        cluster.start(want_models=0)
        node = wait_for(
            lambda: next(n for n in cluster.nodes() if n["state"] == "incompatible"),
            60,
            "the node listed as incompatible",
        )
        reason = f"agent 9.0.0 speaks protocol 2.0, this head speaks {PROTOCOL_VERSION}"
        assert (node["name"], node["agent_version"], node["protocol_version"]) == (
            "future",
            "9.0.0",
            "2.0",
        )
        assert node["reason"] == reason and node["models"] == []
        env = {**os.environ, "METERLESS_CONFIG_DIR": str(cluster.config_dir)}
        cmd = [sys.executable, "-m", "cluster.cli", "nodes", "--url", cluster.url]
        shown = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=60)
        assert shown.returncode == 0, shown.stderr
        assert f"incompatible future ({future_agent}): {reason}" in shown.stdout
        listed = subprocess.run(
            [*cmd, "--json"], capture_output=True, text=True, env=env, timeout=60, check=True
        )
        assert [
            (n["state"], n["protocol_version"]) for n in json.loads(listed.stdout)["nodes"]
        ] == [("incompatible", "2.0")]
    finally:
        cluster.stop()
