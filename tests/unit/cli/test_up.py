"""What `cluster up` decides before it starts anything."""

from __future__ import annotations

import os
import socket

import pytest

from cluster.cli.down import command_line, is_cluster_up
from cluster.cli.main import build_parser
from cluster.cli.ports import free_port
from cluster.cli.up import UpOptions, claim_port, direct_ingress


def test_one_gateway_replica_on_its_own_ray_listens_on_the_endpoint_itself() -> None:
    assert direct_ingress(UpOptions(port=8000))
    # Several replicas cannot share the port; a joined Ray is configured by whoever started it.
    assert not direct_ingress(UpOptions(port=8000, gateway_replicas=2))
    assert not direct_ingress(UpOptions(port=8000, ray_address="10.0.0.2:6379"))
    assert not direct_ingress(UpOptions(port=0))


def test_the_admin_may_keep_serves_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RAY_SERVE_ENABLE_DIRECT_INGRESS", "0")
    assert not direct_ingress(UpOptions(port=8000))


def test_claim_port_waits_for_closing_connections_then_says_why_not(
    capsys: pytest.CaptureFixture[str],
) -> None:
    port = free_port()
    assert claim_port("127.0.0.1", port, linger_s=0.2) == ""
    with socket.socket() as server:  # as Serve binds the endpoint: no SO_REUSEADDR
        server.bind(("127.0.0.1", port))
        server.listen()
        with socket.create_connection(("127.0.0.1", port), timeout=5) as client:
            server.accept()[0].close()  # the server hangs up first: TIME_WAIT, for a minute
            assert client.recv(1) == b""
        assert "in use by another program" in claim_port("127.0.0.1", port, linger_s=0.2)
    assert capsys.readouterr().out == ""
    why = claim_port("127.0.0.1", port, linger_s=0.2)
    assert why == f"port {port} on 127.0.0.1 is still held after 0s; choose another with --port"
    assert "waiting for the previous run's connections to close" in capsys.readouterr().out


def test_the_body_cap_is_a_positive_number_of_mib(capsys: pytest.CaptureFixture[str]) -> None:
    assert build_parser().parse_args(["up"]).max_body_mib == 8.0
    assert build_parser().parse_args(["up", "--max-body-mib", "0.5"]).max_body_mib == 0.5
    for bad in ("0", "-1", "lots", "nan"):
        with pytest.raises(SystemExit):
            build_parser().parse_args(["up", "--max-body-mib", bad])
    assert "expected a positive number of MiB" in capsys.readouterr().err


def test_down_signals_only_a_cluster_up() -> None:
    assert is_cluster_up(["/opt/meterless/bin/python", "-m", "cluster.cli", "up", "--demo"])
    assert is_cluster_up(["/usr/bin/python3", "/home/a/.venv/bin/cluster", "up"])
    assert not is_cluster_up(["/usr/bin/vim", "notes.txt"])
    assert not is_cluster_up(["/usr/bin/python3", "-m", "http.server", "up"])
    assert not is_cluster_up([])
    assert "pytest" in " ".join(command_line(os.getpid()))  # this very process, not a cluster
    assert not is_cluster_up(command_line(os.getpid()))


def test_the_idle_timeout_is_a_positive_number_of_seconds(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert build_parser().parse_args(["up"]).idle_timeout == 120.0
    assert build_parser().parse_args(["up", "--idle-timeout", "2.5"]).idle_timeout == 2.5
    for bad in ("0", "-1", "nan", "inf", "soon"):
        with pytest.raises(SystemExit):
            build_parser().parse_args(["up", "--idle-timeout", bad])
        assert "expected a positive number of seconds" in capsys.readouterr().err
