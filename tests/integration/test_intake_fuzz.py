"""Hostile input at the endpoint of one real cluster that requires keys: no body, however
broken, gets a 5xx, and each refusal has its dialect's error shape.

Hypothesis generates bodies for every completion route and embeddings (fuzz_bodies.py) and
mutates valid ones (huge integers, wrong types, deep nesting, invalid UTF-8, giant strings,
unknown fields); each is sent, with a valid key, over one keep-alive connection. Then the
intake itself: a body too large is refused on its headers, before it is sent, and connections
that trickle their bodies do not keep a legitimate request from being answered, and one that
trickles its headers is closed at their deadline.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import json
import socket
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings

from cluster.gateway.header_deadline import HEADER_TIMEOUT_S
from tests.harness import ClusterProcess, keyed_cluster, trickle_headers, wait_for
from tests.integration.fuzz_bodies import ROUTES, VALID, mutated

pytestmark = pytest.mark.timeout(1800)
GENERATED = 1_000  # bodies per completion route, as generated
MUTATED = 300  # valid bodies broken, per completion route
EMBEDDINGS = 0.4  # the share of those sent to /v1/embeddings, which is not a completion route
SENT: Counter[str] = Counter()  # requests per route, over the module
FUZZ = settings(
    deadline=None,
    database=None,
    suppress_health_check=list(HealthCheck),
)


@pytest.fixture(scope="module")
def cluster(
    tmp_path_factory: pytest.TempPathFactory, demo_model_dir: Path
) -> Iterator[ClusterProcess]:
    """A cluster that requires API keys, with one agent serving `demo`."""
    with keyed_cluster(tmp_path_factory.mktemp("fuzz"), demo_model_dir.parent, "mlf") as head:
        yield head


@pytest.fixture(scope="module")
def key(cluster: ClusterProcess) -> str:
    """A key without limits."""
    url = cluster.url
    out = subprocess.run(
        [sys.executable, "-m", "cluster.cli", "keys", "create", "fuzz", "--json", "--url", url],
        capture_output=True,
        text=True,
        env=cluster.env,
        timeout=60,
        check=True,
    )
    return str(json.loads(out.stdout)["key"])


@pytest.fixture(scope="module")
def client(cluster: ClusterProcess, key: str) -> Iterator[httpx.Client]:
    """One keep-alive connection with the key, as OpenAI's clients send it."""
    headers = {"authorization": f"Bearer {key}", "content-type": "application/json"}
    with httpx.Client(base_url=cluster.url, headers=headers, timeout=120) as c:
        yield c


ANTHROPIC = {"anthropic-version": "2023-06-01"}  # what Anthropic's clients add


def check(client: httpx.Client, route: str, body: bytes) -> None:
    """Send `body`; no 5xx, and a refusal in the dialect's error shape."""
    SENT[route] += 1
    anthropic = route.startswith("/v1/messages")
    r = client.post(route, content=body, headers=ANTHROPIC if anthropic else None)
    assert r.status_code < 500, (r.status_code, r.text[:500], body[:500])
    if r.status_code >= 400:
        assert_error_shape(r, anthropic)


def assert_error_shape(r: httpx.Response, anthropic: bool) -> None:
    """Anthropic's `{"type": "error", "error": {"type", "message"}}`, or OpenAI's
    `{"error": {"message", "type", "param", "code"}}`."""
    body = r.json()
    error = body["error"]
    if anthropic:
        assert body["type"] == "error" and set(error) == {"type", "message"}, body
    else:
        assert set(body) == {"error"} and set(error) == {"message", "type", "param", "code"}, body
    assert isinstance(error["message"], str) and error["message"], body
    assert isinstance(error["type"], str) and error["type"], body


def examples(route: str, n: int) -> int:
    """How many of `n` bodies a route gets: all of them, or embeddings' share."""
    return round(n * EMBEDDINGS) if route == "/v1/embeddings" else n


@pytest.mark.parametrize("route", sorted(ROUTES))
def test_generated_bodies_get_no_5xx(client: httpx.Client, route: str) -> None:
    n = examples(route, GENERATED)

    @settings(FUZZ, max_examples=n)
    @given(ROUTES[route])
    def run(body: dict[str, Any]) -> None:
        check(client, route, json.dumps(body).encode())

    sent = SENT[route]
    run()
    assert SENT[route] - sent >= n  # every example was sent, none skipped


@pytest.mark.parametrize("route", sorted(ROUTES))
def test_valid_bodies_broken_one_way_get_no_5xx(client: httpx.Client, route: str) -> None:
    n = examples(route, MUTATED)

    @settings(FUZZ, max_examples=n)
    @given(mutated(route))
    def run(body: bytes) -> None:
        check(client, route, body)

    sent = SENT[route]
    run()
    assert SENT[route] - sent >= n


def test_the_valid_bodies_are_answered(client: httpx.Client) -> None:
    for route, body in VALID.items():
        headers = ANTHROPIC if route == "/v1/messages" else None
        assert client.post(route, json=body, headers=headers).status_code == 200, route


def raw_request(cluster: ClusterProcess, head: str, body: bytes = b"") -> tuple[int, bytes]:
    """Send a request's head (and as much of `body` as the gateway takes) on a socket of its
    own; the answer's status and body."""
    with socket.create_connection(("127.0.0.1", cluster.port), timeout=60) as s:
        s.sendall(head.encode())
        with contextlib.suppress(OSError):  # refused mid-body: the gateway closed its side
            s.sendall(body)
        answer = s.makefile("rb")
        status = int(answer.readline().split()[1])
        length = 0
        while line := answer.readline().strip():
            name, _, value = line.partition(b":")
            length = int(value) if name.lower() == b"content-length" else length
        return status, answer.read(length)


def large_post(route: str, auth: str = "") -> str:
    """The head of a 20 MB POST, of which no byte of the body is sent."""
    lines = [f"POST {route} HTTP/1.1", "host: x", "content-type: application/json"]
    lines += [f"content-length: {20 * 10**6}", *([auth] if auth else []), "", ""]
    return "\r\n".join(lines)


def test_a_large_body_is_refused_before_it_is_sent(cluster: ClusterProcess, key: str) -> None:
    # Had the gateway waited for the body, the answer would be its read deadline's 408.
    status, body = raw_request(cluster, large_post("/v1/chat/completions"))
    assert status == 401 and json.loads(body)["error"]["code"] == "invalid_api_key"
    status, body = raw_request(cluster, large_post("/v1/messages", f"x-api-key: {key}"))
    assert status == 413 and json.loads(body)["error"]["type"] == "request_too_large"


def test_a_large_body_sent_in_chunks_is_refused_at_the_cap(
    cluster: ClusterProcess, key: str
) -> None:
    chunk = b"x" * 2**20
    head = "\r\n".join(
        [
            "POST /v1/completions HTTP/1.1",
            "host: x",
            "transfer-encoding: chunked",
            f"authorization: Bearer {key}",
            "",
            "",
        ]
    )
    body = (f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n") * 9  # 9 MiB, never ended
    status, answer = raw_request(cluster, head, body)
    assert status == 413 and json.loads(answer)["error"]["code"] == "request_too_large"


def test_trickling_connections_do_not_keep_a_request_from_being_answered(
    cluster: ClusterProcess, key: str, client: httpx.Client
) -> None:
    head = "\r\n".join(
        [
            "POST /v1/chat/completions HTTP/1.1",
            "host: x",
            "content-length: 100000",
            f"authorization: Bearer {key}",
            "",
            "{",
        ]
    )
    tricklers = [socket.create_connection(("127.0.0.1", cluster.port)) for _ in range(200)]
    try:
        for s in tricklers:
            s.sendall(head.encode())
        for s in tricklers:  # one more byte each: every one is still sending
            s.sendall(b" ")
        r = client.post("/v1/chat/completions", json=VALID["/v1/chat/completions"])
        assert r.status_code == 200 and r.json()["choices"]
    finally:
        for s in tricklers:
            s.close()


def test_a_connection_trickling_its_headers_is_closed_at_their_deadline(
    cluster: ClusterProcess, client: httpx.Client
) -> None:
    slack = 10.0
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        slow = [
            pool.submit(trickle_headers, cluster.port, HEADER_TIMEOUT_S + slack) for _ in range(3)
        ]
        answered = 0
        while not all(t.done() for t in slow):  # others are answered meanwhile
            r = client.post("/v1/chat/completions", json=VALID["/v1/chat/completions"])
            assert r.status_code == 200
            answered += 1
        for trickler in slow:
            seconds, answer = trickler.result()
            assert seconds < HEADER_TIMEOUT_S + slack, "the connection was still open"
            assert seconds >= HEADER_TIMEOUT_S - 1  # its bytes kept coming until the deadline
            assert answer.startswith(b"HTTP/1.1 408 "), answer
    assert answered >= 2


def test_unknown_models_are_one_series_in_the_metrics(
    cluster: ClusterProcess, client: httpx.Client
) -> None:
    for name in ("made-up-1", "made-up-2", "made-up-3"):
        body = {**VALID["/v1/chat/completions"], "model": name}
        assert client.post("/v1/chat/completions", json=body).status_code == 404
    wait_for(lambda: "<unknown>" in _metrics(cluster), 30, "the rows in the metrics")
    assert "made-up-" not in _metrics(cluster)


def _metrics(cluster: ClusterProcess) -> str:
    return httpx.get(f"{cluster.url}/metrics", headers=cluster.admin_headers, timeout=10).text
