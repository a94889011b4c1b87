"""Overflow: a throttled local node first, the provider for what it cannot start in time.

The "cloud" is `mlx_lm.server` on loopback, which logs a line per request it serves: its own
count of what it served is checked against the office's ledger.
"""

from __future__ import annotations

import collections
import concurrent.futures
import json
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from fractions import Fraction as F
from pathlib import Path
from typing import Any

import anthropic
import httpx
import openai
import pytest

from cluster.cli.ports import free_port
from tests.harness import AgentProcess, ClusterProcess, admin_get, head_cli, share_models, wait_for

pytestmark = pytest.mark.timeout(900)

KEY = "sk-office-overflows-51c0ffee"
LOCAL = "slow"  # the throttled node's name
SPILL = "spill"  # a model with an overflow route and no local node: every request is rented


@pytest.fixture(scope="module")
def office(
    tmp_path_factory: pytest.TempPathFactory, demo_model_dir: Path
) -> Iterator[tuple[ClusterProcess, Path, str]]:
    """(the office, with one node paced to a few decode steps a second and `demo` overflowing
    to the cloud after 1 s; the cloud's log; the model the cloud serves)."""
    root = tmp_path_factory.mktemp("overflow")
    port = free_port()
    log_path = root / "cloud.log"
    log = open(log_path, "wb")
    serve = ("--model", str(demo_model_dir), "--host", "127.0.0.1", "--port", str(port))
    cloud = subprocess.Popen(
        [sys.executable, "-m", "mlx_lm.server", *serve], stdout=log, stderr=subprocess.STDOUT
    )
    agent = AgentProcess(
        share_models(root / LOCAL, demo_model_dir.parent),
        name=LOCAL,
        args=("--model", "demo", "--no-mdns", "--max-steps-per-s", "4"),
    )
    ray_dir = tempfile.mkdtemp(prefix="mlo", dir="/tmp")  # short: Ray's socket paths are limited
    head = ClusterProcess(root / "office", extra_env={"RAY_TMPDIR": ray_dir})
    head.data_dir.mkdir()
    base = f"http://127.0.0.1:{port}/v1"
    try:
        wait_for(lambda: _up(f"{base}/models"), 120, "mlx_lm.server to listen")
        agent.start()
        head.args = ("--no-local-agent", "--no-mdns", "--peer", agent.address)
        head.start()
        add = ["providers", "add", "cloud", "--kind", "openai", "--base-url", base]
        price = ("--price", f"{demo_model_dir}=2,8")
        made = head_cli(head, *add, "--key-env", "CLOUD_KEY", *price, CLOUD_KEY=KEY)
        assert made.returncode == 0, made.stderr
        _route(head, "demo", f"cloud:{demo_model_dir}", "1")
        _route(head, SPILL, f"cloud:{demo_model_dir}", "1")
        wait_for(lambda: _chat(head.url, SPILL).status_code == 200, 15, "the routes to be read")
        wait_for(lambda: _rows(head) == {"provider:cloud": 1}, 15, "the ledger's first row")
        yield head, log_path, str(demo_model_dir)
    finally:
        head.stop()
        agent.stop()
        cloud.terminate()
        cloud.wait(timeout=30)
        log.close()
        shutil.rmtree(ray_dir, ignore_errors=True)


def test_a_burst_rents_what_the_local_node_cannot_start_in_time(
    office: tuple[ClusterProcess, Path, str],
) -> None:
    head, log, _ = office
    served_before, rows_before = _served(log), _rows(head)
    places = _burst(head.url, 12)
    rented = places["provider:cloud"]
    assert sum(places.values()) == 12  # every request answered (a 200 each)
    assert 0 < rented < 12 and places[_node_id(head)] == 12 - rented, places
    wait_for(lambda: _served(log) == served_before + rented, 15, "the cloud's log")
    want = {k: rows_before.get(k, 0) + n for k, n in places.items()}
    wait_for(lambda: sum(_rows(head).values()) >= sum(want.values()), 15, "the ledger's rows")
    assert _rows(head) == want  # a row per request, where it ran

    (cloud,) = admin_get(head, "/admin/cost?since=24h")["rented"]
    tokens = cloud["tokens"]
    assert cloud["cost_usd"] == float(F(tokens["prompt"] * 2 + tokens["completion"] * 8, 10**6))
    local = [n for n in admin_get(head, "/admin/cost?since=24h")["nodes"] if n["name"] == LOCAL]
    assert local and local[0]["tokens"]["completion"] > 0


def test_a_local_only_keys_burst_never_reaches_the_provider(
    office: tuple[ClusterProcess, Path, str],
) -> None:
    head, log, cloud_model = office
    made = head_cli(head, "keys", "create", "private", "--local-only", "--json", "--url", head.url)
    assert made.returncode == 0, made.stderr
    key = json.loads(made.stdout)["key"]
    served = _served(log)
    places = _burst(head.url, 8, key)
    assert places == {_node_id(head): 8}
    refused = _chat(head.url, SPILL, key)  # no local node serves it: a 503, never the cloud
    assert refused.status_code == 503 and refused.json()["error"]["code"] == "no_capacity"
    assert "never go to a provider" in refused.json()["error"]["message"]
    private = anthropic.Anthropic(base_url=head.url, api_key=key, max_retries=0)
    with pytest.raises(anthropic.APIStatusError) as gone:  # in Anthropic's shape to its clients
        private.messages.create(
            model=SPILL, max_tokens=4, messages=[{"role": "user", "content": "hi"}]
        )
    assert gone.value.status_code == 503 and isinstance(gone.value.body, dict)
    assert gone.value.body["type"] == "error" and gone.value.body["error"]["message"]
    assert _served(log) == served

    def listed(key: str | None) -> list[str]:
        r = httpx.get(f"{head.url}/v1/models", headers=_auth(key), timeout=10)
        return [m["id"] for m in r.json()["data"]]

    assert head_cli(head, "route", "rented-only", "--to", f"cloud:{cloud_model}").returncode == 0
    wait_for(lambda: "rented-only" in listed(None), 15, "the route to be read")
    assert "demo" in listed(key) and "rented-only" not in listed(key)  # it could not use it


def test_an_anthropic_client_overflowing_to_an_openai_provider_gets_anthropics_shapes(
    office: tuple[ClusterProcess, Path, str],
) -> None:
    head, log, _ = office
    served = _served(log)
    claude = anthropic.Anthropic(base_url=head.url, api_key="unused", max_retries=0)
    ask: dict[str, Any] = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 6}
    message = claude.messages.create(model=SPILL, **ask)
    assert message.type == "message" and message.role == "assistant" and message.model == SPILL
    # the demo model's tokens may open a reasoning block, which the cloud reports as such
    assert message.content and {b.type for b in message.content} <= {"text", "thinking"}
    assert message.usage.output_tokens > 0
    assert message.stop_reason in ("end_turn", "max_tokens")
    with claude.messages.stream(model=SPILL, **ask) as stream:
        kinds = [event.type for event in stream]
        final = stream.get_final_message()
    assert kinds[0] == "message_start" and kinds[-1] == "message_stop"
    assert final.usage.output_tokens > 0
    oai = openai.OpenAI(base_url=f"{head.url}/v1", api_key="unused", max_retries=0)
    answer = oai.responses.create(model=SPILL, input="hi", max_output_tokens=16)
    assert answer.status in ("completed", "incomplete") and answer.usage is not None
    wait_for(lambda: _served(log) == served + 3, 15, "the cloud's log")


def test_a_provider_down_leaves_the_burst_to_the_local_node_or_a_clear_503(
    office: tuple[ClusterProcess, Path, str],
) -> None:
    head, _, cloud_model = office
    closed = f"http://127.0.0.1:{free_port()}/v1"
    add = ["providers", "add", "down", "--kind", "openai", "--base-url", closed]
    assert head_cli(head, *add, "--key-env", "K", K=KEY).returncode == 0
    _route(head, "demo", "down:any", "0")  # every request would overflow, if it could
    _route(head, SPILL, "down:any", "1")
    wait_for(lambda: _chat(head.url, SPILL).status_code == 503, 15, "the new routes to be read")
    refused = _chat(head.url, SPILL)
    assert (
        "No local node can serve `spill` right now, and down cannot be reached"
        in (refused.json()["error"]["message"])
    )
    try:
        assert _burst(head.url, 6) == {_node_id(head): 6}
    finally:
        _route(head, "demo", f"cloud:{cloud_model}", "1")
        _route(head, SPILL, f"cloud:{cloud_model}", "1")


def test_a_stalled_provider_leaves_the_burst_to_the_local_node_or_a_clear_503(
    office: tuple[ClusterProcess, Path, str],
) -> None:
    """A provider that takes the connection and never answers: overflowing requests give up on
    it at its read timeout, then run locally, or end in a 503 where no local node serves the
    model; none hangs."""
    head, _, cloud_model = office
    with socket.socket() as stalled:  # the kernel completes its handshakes; nobody answers
        stalled.bind(("127.0.0.1", 0))
        stalled.listen(64)
        base = f"http://127.0.0.1:{stalled.getsockname()[1]}/v1"
        add = ["providers", "add", "stalled", "--kind", "openai", "--base-url", base]
        assert head_cli(head, *add, "--key-env", "K", K=KEY).returncode == 0
        _route(head, "demo", "stalled:any", "0")  # every request tries the provider first
        _route(head, SPILL, "stalled:any", "1")
        try:
            wait_for(lambda: _stalls(head.url, SPILL), 30, "the new routes to be read")
            with concurrent.futures.ThreadPoolExecutor(1) as pool:
                refused = pool.submit(_chat, head.url, SPILL)
                assert _burst(head.url, 4) == {_node_id(head): 4}
                answer = refused.result()
            assert answer.status_code == 503, answer.text
            message = answer.json()["error"]["message"]
            assert "No local node can serve `spill` right now" in message
            assert "stalled did not answer in time" in message
        finally:
            _route(head, "demo", f"cloud:{cloud_model}", "1")
            _route(head, SPILL, f"cloud:{cloud_model}", "1")


def _stalls(url: str, model: str) -> bool:
    """Whether a request for `model` is still unanswered after 3 s (the cloud answers in one)."""
    body = {"model": model, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 8}
    try:
        httpx.post(f"{url}/v1/chat/completions", json=body, timeout=3)
    except httpx.TimeoutException:
        return True
    return False


@pytest.fixture(scope="module")
def claude(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClusterProcess]:
    """A second meterless head serving `demo`: the Anthropic-kind "cloud" (it speaks Messages)."""
    root = tmp_path_factory.mktemp("anthropic-cloud")
    ray_dir = tempfile.mkdtemp(prefix="mla", dir="/tmp")
    cloud = ClusterProcess(root, args=("--demo", "--no-mdns"), extra_env={"RAY_TMPDIR": ray_dir})
    try:
        cloud.start()
        yield cloud
    finally:
        cloud.stop()
        shutil.rmtree(ray_dir, ignore_errors=True)


def test_an_anthropic_provider_serves_openai_clients_in_their_dialect(
    office: tuple[ClusterProcess, Path, str], claude: ClusterProcess
) -> None:
    head, _, _ = office
    add = ["providers", "add", "claude", "--kind", "anthropic", "--base-url", f"{claude.url}/v1"]
    made = head_cli(head, *add, "--key-env", "K", "--price", "demo=3,15", K=KEY)
    assert made.returncode == 0, made.stderr
    assert head_cli(head, "route", "claude-x", "--to", "claude:demo").returncode == 0
    wait_for(lambda: _chat(head.url, "claude-x").status_code == 200, 15, "the route to be read")
    oai = openai.OpenAI(base_url=f"{head.url}/v1", api_key="unused", max_retries=0)
    ask: dict[str, Any] = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 6}
    whole = oai.chat.completions.create(model="claude-x", **ask)
    assert whole.model == "claude-x" and whole.object == "chat.completion"
    assert whole.usage is not None and whole.usage.completion_tokens > 0
    chunks = list(
        oai.chat.completions.create(
            model="claude-x", stream=True, stream_options={"include_usage": True}, **ask
        )
    )
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0
    text = oai.completions.create(model="claude-x", prompt="Once", max_tokens=4)
    assert text.object == "text_completion" and text.usage is not None

    def served(groups: list[dict[str, Any]], model: str) -> int:
        return sum(g["ok"] for g in groups if g["model"] == model)

    wait_for(
        lambda: served(admin_get(claude, "/admin/usage?by=model")["groups"], "demo") == 4,
        15,
        "the Anthropic cloud's own ledger",
    )
    wait_for(lambda: _rows(head).get("provider:claude") == 4, 15, "the office's ledger")
    rented = {r["provider"]: r for r in admin_get(head, "/admin/cost?since=24h")["rented"]}
    tokens = rented["claude"]["tokens"]
    cost = F(tokens["prompt"] * 3 + tokens["completion"] * 15, 10**6)
    assert rented["claude"]["cost_usd"] == float(cost) and tokens["completion"] > 0


def _burst(url: str, n: int, key: str | None = None) -> collections.Counter[str]:
    """`n` concurrent chat completions of `demo` (all must succeed); where each ran."""

    def one(i: int) -> str:
        r = _chat(url, "demo", key, f"Note {i}:")
        assert r.status_code == 200, r.text
        return r.headers["x-meterless-node"]

    with concurrent.futures.ThreadPoolExecutor(n) as pool:
        return collections.Counter(pool.map(one, range(n)))


def _chat(url: str, model: str, key: str | None = None, text: str = "hi") -> httpx.Response:
    body = {"model": model, "messages": [{"role": "user", "content": text}], "max_tokens": 8}
    return httpx.post(f"{url}/v1/chat/completions", json=body, headers=_auth(key), timeout=120)


def _auth(key: str | None) -> dict[str, str]:
    return {"authorization": f"Bearer {key}"} if key else {}


def _route(head: ClusterProcess, model: str, target: str, wait: str) -> None:
    made = head_cli(head, "route", model, "--overflow", target, "--overflow-wait", wait)
    assert made.returncode == 0, made.stderr


def _node_id(head: ClusterProcess) -> str:
    return next(n["node_id"] for n in head.nodes() if n["name"] == LOCAL)


def _rows(head: ClusterProcess) -> dict[str, int]:
    """Requests the office's ledger recorded as answered, by where they ran."""
    groups = admin_get(head, "/admin/usage?by=node")["groups"]
    return {g["node"]: g["ok"] + g.get("failed_over", 0) for g in groups if g["node"]}


def _served(log: Path) -> int:
    """Requests the cloud (`mlx_lm.server`) has logged."""
    return log.read_text(errors="replace").count("POST /v1/")


def _up(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False
