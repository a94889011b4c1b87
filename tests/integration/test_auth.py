"""The cluster secret end to end: who is admitted, who is rejected, and what an outsider can do.

One `cluster up --demo` (its local agent gets the token by itself), one agent joined with the
token, and two rogues at the same cluster by --peer: one with no token, one with another
cluster's. Real processes, real TLS, real gRPC on loopback.
"""

from __future__ import annotations

import asyncio
import json
import os
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import openai
import pytest

from cluster.access import secret_store
from cluster.node_client import (
    PLAINTEXT_REASON,
    WRONG_SECRET_REASON,
    NodeClient,
    NodeUnauthenticated,
)
from node_agent.proto import pb, pb_grpc
from node_agent.trust import SIGNATURE_HEADER, ClusterSecret, decode_token, encode_token
from tests.harness import AgentProcess, ClusterProcess, share_models, wait_for

pytestmark = pytest.mark.timeout(600)
UNLOAD_MODEL = "/meterless.agent.v1.Agent/UnloadModel"


@dataclass
class Office:
    """The cluster, its token, the agent that joined with it, and the two rogues."""

    cluster: ClusterProcess
    token: str = field(repr=False)
    member: AgentProcess = field(repr=False)
    no_token: AgentProcess = field(repr=False)
    other_secret: AgentProcess = field(repr=False)
    other: ClusterSecret = field(repr=False)

    @property
    def secret(self) -> ClusterSecret:
        """The cluster's secret, as an agent gets it from the token."""
        return decode_token(self.token)


@pytest.fixture(scope="module")
def office(tmp_path_factory: pytest.TempPathFactory, demo_model_dir: Path) -> Iterator[Office]:
    """`cluster up --demo` that admits only agents with its token, and three agents at it."""
    root = tmp_path_factory.mktemp("auth")
    cluster = ClusterProcess(root / "head", plaintext_agents=False)
    token = cluster.join_token()  # before `cluster up`: agents may be prepared first
    other = ClusterSecret(os.urandom(32))

    def agent(name: str, join_token: str = "") -> AgentProcess:
        return AgentProcess(
            share_models(root / name, demo_model_dir.parent),
            name=name,
            args=("--model", "demo", "--no-mdns"),
            join_token=join_token,
        )

    office = Office(
        cluster=cluster,
        token=token,
        member=agent("member", token),
        no_token=agent("rogue-plain"),
        other_secret=agent("rogue-other", encode_token(other)),
        other=other,
    )
    agents = (office.member, office.no_token, office.other_secret)
    try:
        for a in agents:
            a.start()
        cluster.args = ("--demo", *[arg for a in agents for arg in ("--peer", a.address)])
        cluster.start()
        wait_for(
            lambda: (
                sorted(n["state"] for n in cluster.nodes())
                == ["ready", "ready", "rejected", "rejected"]
            ),
            120,
            "two nodes ready and two rejected",
        )
        yield office
    finally:
        cluster.stop()
        for a in agents:
            a.stop()


def by_name(office: Office) -> dict[str, dict]:  # type: ignore[type-arg]
    """The admin API's nodes, by name."""
    return {n["name"]: n for n in office.cluster.nodes()}


def generated(address: str, secret: ClusterSecret | None) -> int:
    """Tokens the agent at `address` generated so far, from its own status stream."""

    async def first_status() -> int:
        client = NodeClient(address, secret=secret)
        try:
            stream = client.watch_status()
            sample = await anext(stream)
            await stream.aclose()
            return sum(m.generated_tokens for m in sample.models)
        finally:
            await client.close()

    return asyncio.run(first_status())


def test_the_secret_file_is_owner_only(office: Office) -> None:
    path = office.cluster.config_dir / secret_store.FILE_NAME
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert secret_store.load(path.parent) == office.secret


def test_rogues_are_listed_as_rejected_with_the_reason(office: Office) -> None:
    nodes = by_name(office)
    assert nodes["member"]["state"] == "ready" and nodes["member"]["reason"] == ""
    assert not nodes["member"]["plaintext"]
    assert nodes["rogue-plain"]["state"] == "rejected"
    assert nodes["rogue-plain"]["reason"] == PLAINTEXT_REASON
    rogue = next(n for n in nodes.values() if n["address"] == office.other_secret.address)
    assert rogue["state"] == "rejected" and rogue["reason"] == WRONG_SECRET_REASON
    assert rogue["models"] == [] and nodes["rogue-plain"]["models"] == []


def test_cluster_nodes_shows_the_rejection_and_why(office: Office) -> None:
    env = {**os.environ, "METERLESS_CONFIG_DIR": str(office.cluster.config_dir)}
    cmd = [sys.executable, "-m", "cluster.cli", "nodes", "--url", office.cluster.url]
    table = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=60)
    assert table.returncode == 0, table.stderr
    assert f"rejected rogue-plain ({office.no_token.address}): {PLAINTEXT_REASON}" in table.stdout
    assert WRONG_SECRET_REASON in table.stdout
    listed = json.loads(
        subprocess.run(
            [*cmd, "--json"], capture_output=True, text=True, env=env, timeout=60, check=True
        ).stdout
    )
    assert sum(n["state"] == "rejected" for n in listed["nodes"]) == 2


def test_requests_reach_members_only(office: Office) -> None:
    client = openai.OpenAI(base_url=f"{office.cluster.url}/v1", api_key="unused", max_retries=0)
    for i in range(8):
        r = client.chat.completions.create(
            model="demo", messages=[{"role": "user", "content": f"Hello number {i}."}], max_tokens=6
        )
        assert r.usage is not None and r.usage.completion_tokens > 0
    local = next(
        n["address"]
        for n in office.cluster.nodes()
        if n["state"] == "ready" and n["name"] != "member"
    )
    served = generated(office.member.address, office.secret) + generated(local, office.secret)
    assert served >= 8
    assert generated(office.no_token.address, None) == 0
    assert generated(office.other_secret.address, office.other) == 0
    nodes = by_name(office)
    assert nodes["rogue-plain"]["state"] == "rejected"
    assert [n["state"] for n in nodes.values() if n["address"] == office.other_secret.address] == [
        "rejected"
    ]


def load_model(channel: grpc.Channel, metadata: tuple[tuple[str, str], ...] = ()) -> None:
    """Ask for a load of `demo` under a new name, and read the whole answer."""
    stub = pb_grpc.AgentStub(channel)  # type: ignore[no-untyped-call]
    list(
        stub.LoadModel(
            pb.LoadModelRequest(model="demo", name="intruder"), timeout=10, metadata=metadata
        )
    )


def tls_channel(address: str, secret: ClusterSecret) -> grpc.Channel:
    """A blocking TLS channel presenting `secret`'s certificate."""
    credentials = grpc.ssl_channel_credentials(
        secret.certificate_pem, secret.private_key_pem, secret.certificate_pem
    )
    return grpc.secure_channel(
        address, credentials, options=(("grpc.ssl_target_name_override", "meterless.cluster"),)
    )


def test_an_agent_refuses_load_model_without_the_secret(office: Office) -> None:
    address = office.member.address
    with grpc.insecure_channel(address) as plain, pytest.raises(grpc.RpcError) as no_tls:
        load_model(plain)
    assert no_tls.value.code() is grpc.StatusCode.UNAVAILABLE
    with tls_channel(address, office.other) as wrong, pytest.raises(grpc.RpcError) as bad:
        load_model(wrong)
    assert "handshake failed" in (bad.value.details() or "").lower()
    # Right certificate, no call signature (say, a stolen certificate without the secret's MAC
    # key): refused by the agent itself, and it says why.
    with tls_channel(address, office.secret) as unsigned, pytest.raises(grpc.RpcError) as sig:
        load_model(unsigned)
    assert sig.value.code() is grpc.StatusCode.UNAUTHENTICATED
    assert "no call signature" in (sig.value.details() or "")
    assert "intruder" not in {m for n in office.cluster.nodes() for m in n["models"]}


def test_a_replayed_call_is_refused(office: Office) -> None:
    address, secret = office.member.address, office.secret
    signature = secret.sign_call(UNLOAD_MODEL, now=time.time(), nonce=os.urandom(16))
    header = ((SIGNATURE_HEADER, signature),)
    with tls_channel(address, secret) as channel:
        stub = pb_grpc.AgentStub(channel)  # type: ignore[no-untyped-call]
        request = pb.UnloadModelRequest(model="no-such-model")
        assert stub.UnloadModel(request, timeout=10, metadata=header).unloaded is False
        with pytest.raises(grpc.RpcError) as replay:
            stub.UnloadModel(request, timeout=10, metadata=header)
    assert replay.value.code() is grpc.StatusCode.UNAUTHENTICATED
    assert "replayed" in (replay.value.details() or "")
    log = office.member.log_path.read_text()
    assert "refused /meterless.agent.v1.Agent/UnloadModel: replayed" in log


def test_the_node_client_reports_a_wrong_secret_as_unauthenticated(office: Office) -> None:
    async def describe() -> None:
        client = NodeClient(office.member.address, secret=office.other)
        try:
            await client.describe(timeout=5)
        finally:
            await client.close()

    with pytest.raises(NodeUnauthenticated, match="does not hold this cluster's secret"):
        asyncio.run(describe())


def test_agents_say_how_they_are_guarded(office: Office) -> None:
    assert "TLS on port" in office.member.log_path.read_text()
    assert "NO JOIN TOKEN" in office.no_token.log_path.read_text()
    cluster_log = (office.cluster.data_dir / "cluster.log").read_text()
    assert f"cluster {office.secret.fingerprint}" in cluster_log
    assert "TLS on port" in cluster_log  # the local agent started by `cluster up` got the token


def test_the_secret_is_in_no_log(office: Office) -> None:
    _, b64, _ = office.token.split(".")
    hexed = office.secret.secret.hex()
    logs = [
        office.cluster.data_dir / "cluster.log",
        *(a.log_path for a in (office.member, office.no_token, office.other_secret)),
    ]
    # Ray names a session after the process that started it: `cluster up` itself.
    assert office.cluster.proc is not None
    ray_sessions = list(Path("/tmp/ray").glob(f"session_*_{office.cluster.proc.pid}"))
    assert len(ray_sessions) == 1, "the cluster's Ray session"
    ray_logs = [p for p in (ray_sessions[0] / "logs").rglob("*") if p.is_file()]
    assert ray_logs
    for log in [*logs, *ray_logs]:
        text = log.read_bytes()
        assert b64.encode() not in text and hexed.encode() not in text, log
