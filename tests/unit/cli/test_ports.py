"""Service ports come from below the kernel's ephemeral range, where Ray's connections never are."""

from __future__ import annotations

import random
import socket
from pathlib import Path

from cluster.cli import ports


def test_candidates_lie_between_ray_workers_and_the_ephemeral_range() -> None:
    found = ports.candidates((32_768, 60_999), random.Random(7), tries=500)
    assert len(found) == 500 and all(ports.LOWEST <= p < 32_768 for p in found)
    assert ports.candidates((20_500, 60_999), random.Random(7)) == []  # no room: the kernel picks


def test_the_range_is_read_from_the_kernel_or_is_ianas(tmp_path: Path) -> None:
    f = tmp_path / "range"
    f.write_text("32768\t60999\n")
    assert ports.ephemeral_range(f) == (32_768, 60_999)
    assert ports.ephemeral_range(tmp_path / "missing") == ports.IANA_EPHEMERAL
    f.write_text("garbage")
    assert ports.ephemeral_range(f) == ports.IANA_EPHEMERAL


def test_a_free_port_is_bindable_and_not_ephemeral() -> None:
    port = ports.free_port()
    assert ports.LOWEST <= port < ports.ephemeral_range()[0]
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))


def test_port_state_tells_a_listener_from_connections_still_closing() -> None:
    port = ports.free_port()
    assert ports.port_state("127.0.0.1", port) == "free"
    with socket.socket() as server:  # no SO_REUSEADDR, as Serve binds the endpoint
        server.bind(("127.0.0.1", port))
        server.listen()
        with socket.create_connection(("127.0.0.1", port), timeout=5) as client:
            accepted, _ = server.accept()
            accepted.close()  # the server closes first: its end waits out TIME_WAIT
            assert client.recv(1) == b""
        assert ports.port_state("127.0.0.1", port) == "taken"
    # No listener now, only the server's closed connection in TIME_WAIT.
    assert ports.port_state("127.0.0.1", port) == "lingering"
    assert ports.port_state("0.0.0.0", port) == "lingering"
