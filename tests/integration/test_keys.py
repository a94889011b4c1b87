"""API keys and the admin token on a real cluster that requires keys, through the openai client.

The cluster binds loopback without --demo, so keys are required (access/exposure.py); one agent
serves `demo` as a static peer. Ray writes its logs under a directory of this test's own, so
that the last test can look for secrets in everything the cluster logged.
"""

from __future__ import annotations

import json
import sqlite3
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from tests.harness import ClusterProcess, keyed_cluster, wait_for

SECRETS: list[str] = []  # every full key made here, for the log check at the end


@pytest.fixture(scope="module")
def cluster(
    tmp_path_factory: pytest.TempPathFactory, demo_model_dir: Path
) -> Iterator[ClusterProcess]:
    """A cluster that requires API keys, with one agent serving `demo`."""
    with keyed_cluster(tmp_path_factory.mktemp("keys"), demo_model_dir.parent, "mlk") as head:
        yield head


def cli(
    cluster: ClusterProcess, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """`cluster ARGS --url ...` as the admin on the head runs it."""
    return subprocess.run(
        [sys.executable, "-m", "cluster.cli", *args, "--url", cluster.url],
        capture_output=True,
        text=True,
        env=env or cluster.env,
        timeout=60,
    )


def create(cluster: ClusterProcess, name: str, *flags: str) -> dict[str, Any]:
    """`cluster keys create NAME FLAGS --json`; the key is remembered for the log check."""
    out = cli(cluster, "keys", "create", name, *flags, "--json")
    assert out.returncode == 0, out.stderr
    made: dict[str, Any] = json.loads(out.stdout)
    SECRETS.append(made["key"])
    return made


def client(cluster: ClusterProcess, key: str) -> openai.OpenAI:
    """The official client with `api_key=key`, no retries."""
    return openai.OpenAI(base_url=f"{cluster.url}/v1", api_key=key, max_retries=0)


def ask(c: openai.OpenAI, model: str = "demo") -> str:
    """One short chat completion; its request id (as the ledger has it)."""
    r = c.chat.completions.create(
        model=model, max_tokens=3, messages=[{"role": "user", "content": "Hi."}]
    )
    return r.id.removeprefix("chatcmpl-")


def test_before_any_key_exists_every_request_is_401_saying_how_to_make_one(
    cluster: ClusterProcess,
) -> None:
    with pytest.raises(openai.AuthenticationError) as err:
        ask(client(cluster, "anything"))
    assert "cluster keys create" in err.value.message
    assert httpx.get(f"{cluster.url}/health", timeout=10).status_code == 200  # stays open
    log = (cluster.data_dir / "cluster.log").read_text()
    assert "API keys required" in log  # loopback without --demo: said at start
    assert f"admin token: {cluster.config_dir / 'admin-token'}" in log


def test_no_key_or_a_bad_key_is_401_openai_shaped(cluster: ClusterProcess) -> None:
    good = create(cluster, "alice")["key"]
    assert ask(client(cluster, good))
    key_id = good.split("-")[1]
    for bad in (
        "sk-not-ours",
        good[:-1] + ("0" if good[-1] != "0" else "1"),
        f"ml-{key_id}-{'0' * 40}",
    ):
        with pytest.raises(openai.AuthenticationError) as err:
            ask(client(cluster, bad))
        assert err.value.status_code == 401
        body = err.value.response.json()["error"]
        assert body["type"] == "invalid_request_error" and body["code"] == "invalid_api_key"
    r = httpx.post(
        f"{cluster.url}/v1/chat/completions",
        timeout=10,
        json={"model": "demo", "messages": [{"role": "user", "content": "x"}]},
    )
    assert r.status_code == 401 and set(r.json()["error"]) >= {"message", "type", "code"}
    with pytest.raises(openai.AuthenticationError):
        client(cluster, "sk-not-ours").models.list()


def test_a_key_limited_to_other_models_gets_403_and_sees_only_its_models(
    cluster: ClusterProcess,
) -> None:
    other = create(cluster, "other-only", "--models", "tiny", "big")["key"]
    with pytest.raises(openai.PermissionDeniedError) as err:
        ask(client(cluster, other))
    assert err.value.status_code == 403 and "tiny" in err.value.message
    assert [m.id for m in client(cluster, other).models.list()] == []
    demo = create(cluster, "demo-only", "--models", "demo")["key"]
    assert ask(client(cluster, demo))
    assert [m.id for m in client(cluster, demo).models.list()] == ["demo"]


def test_over_max_concurrent_is_429_with_retry_after_until_a_stream_ends(
    cluster: ClusterProcess,
) -> None:
    key = create(cluster, "one-at-a-time", "--max-concurrent", "1")["key"]
    c = client(cluster, key)
    stream = c.completions.create(
        model="demo", prompt="A very long story:", max_tokens=1500, temperature=0, stream=True
    )
    try:
        next(iter(stream))  # the stream is running: the key's one slot is taken
        with pytest.raises(openai.RateLimitError) as err:
            ask(c)
        assert err.value.status_code == 429
        assert int(err.value.response.headers["retry-after"]) >= 1
        assert err.value.response.json()["error"]["code"] == "rate_limit_exceeded"
        assert ask(client(cluster, SECRETS[0]))  # another key is not held back
    finally:
        stream.close()
    assert wait_for(lambda: ask(c), 5, "the slot to come back once the stream is closed")


def test_a_revoked_key_stops_working_within_a_second(cluster: ClusterProcess) -> None:
    key = create(cluster, "leaver")["key"]
    c = client(cluster, key)
    assert ask(c)
    http = httpx.Client(base_url=cluster.url, headers=cluster.admin_headers, timeout=10)
    asked = time.monotonic()
    r = http.post("/admin/keys/leaver/revoke", json={})
    answered = time.monotonic()
    assert r.status_code == 200 and r.json()["revoked_at"]

    def refused() -> bool:
        m = httpx.get(f"{cluster.url}/v1/models", headers={"authorization": f"Bearer {key}"})
        return m.status_code == 401

    wait_for(refused, 1.0, "the revoked key to be refused", interval=0.01)
    refused_at = time.monotonic()
    print(
        f"revoked key refused {refused_at - asked:.3f}s after the revoke was sent "
        f"({refused_at - answered:.3f}s after it was answered)"
    )
    assert refused_at - asked < 1.0
    with pytest.raises(openai.AuthenticationError, match="revoked"):
        ask(c)
    listed = json.loads(cli(cluster, "keys", "list", "--json").stdout)["keys"]
    assert {k["name"]: bool(k["revoked_at"]) for k in listed}["leaver"] is True
    assert all("key" not in k and "digest" not in k for k in listed)


def test_the_ledger_records_the_key_of_every_request_and_usage_by_key_agrees(
    cluster: ClusterProcess,
) -> None:
    a, b = create(cluster, "ledger-a"), create(cluster, "ledger-b")
    ids = {
        a["key_id"]: [ask(client(cluster, a["key"])) for _ in range(3)],
        b["key_id"]: [ask(client(cluster, b["key"])) for _ in range(2)],
    }

    def rows() -> dict[str, str | None]:
        conn = sqlite3.connect(cluster.data_dir / "ledger.sqlite3")
        try:
            return dict(conn.execute("SELECT request_id, key_id FROM requests").fetchall())
        finally:
            conn.close()

    wanted = {r for v in ids.values() for r in v}
    wait_for(lambda: wanted <= rows().keys(), 10, "the five rows in the ledger")
    ledger = rows()
    assert {r: ledger[r] for r in wanted} == {r: k for k, v in ids.items() for r in v}
    assert None not in ledger.values()  # every request here carried a key
    out = cli(cluster, "usage", "--by", "key", "--since", "all", "--json")
    assert out.returncode == 0, out.stderr
    groups = {g["key"]: g for g in json.loads(out.stdout)["groups"]}
    counted: dict[str | None, int] = {}
    for key_id in ledger.values():
        counted[key_id] = counted.get(key_id, 0) + 1
    assert {k: g["requests"] for k, g in groups.items()} == counted
    assert groups[a["key_id"]]["requests"] == 3 and groups[a["key_id"]]["name"] == "ledger-a"
    assert groups[b["key_id"]]["requests"] == 2
    table = cli(
        cluster, "usage", "--by", "key", "--since", "all", env={**cluster.env, "COLUMNS": "200"}
    )
    assert table.returncode == 0 and f"ledger-a ({a['key_id']})" in table.stdout


def test_the_admin_api_needs_the_admin_token(cluster: ClusterProcess) -> None:
    paths = [
        ("GET", "/admin/nodes"),
        ("GET", "/admin/models"),
        ("GET", "/admin/keys"),
        ("GET", "/admin/cost"),
        ("GET", "/admin/usage"),
        ("POST", "/admin/keys"),
        ("POST", "/admin/keys/alice/revoke"),
        ("POST", "/admin/nodes/agent0/drain"),
        ("POST", "/admin/nodes/agent0/cost"),
    ]
    user_key = SECRETS[0]
    for headers in (
        {},
        {"authorization": "Bearer mla-wrong"},
        {"authorization": f"Bearer {user_key}"},
    ):
        for method, path in paths:
            r = httpx.request(method, f"{cluster.url}{path}", headers=headers, json={}, timeout=10)
            assert r.status_code == 401, (method, path, headers, r.text)
            assert r.json()["error"]["code"] == "invalid_admin_token"
    assert [n["state"] for n in cluster.nodes()] == ["ready"]  # not drained by the above
    assert ask(client(cluster, user_key))  # alice was not revoked
    r = httpx.get(f"{cluster.url}/metrics", timeout=10)
    assert r.status_code == 200  # bound to loopback: open to a local Prometheus


def test_the_cli_reads_the_token_from_the_env_and_fails_in_one_line(
    cluster: ClusterProcess,
) -> None:
    token = (cluster.config_dir / "admin-token").read_text().strip()
    elsewhere = {**cluster.env, "METERLESS_CONFIG_DIR": str(cluster.data_dir / "nowhere")}
    ok = cli(cluster, "nodes", "--json", env={**elsewhere, "METERLESS_ADMIN_TOKEN": token})
    assert ok.returncode == 0 and json.loads(ok.stdout)["nodes"][0]["name"] == "agent0"
    for env in (elsewhere, {**elsewhere, "METERLESS_ADMIN_TOKEN": "mla-wrong"}):
        bad = cli(cluster, "keys", "list", env=env)
        assert bad.returncode == 1 and bad.stdout == ""
        assert bad.stderr.count("\n") == 1 and "Traceback" not in bad.stderr
        assert "admin token" in bad.stderr and "METERLESS_ADMIN_TOKEN" in bad.stderr


def test_key_and_token_files_are_owner_only(cluster: ClusterProcess) -> None:
    def mode(path: Path) -> int:
        return stat.S_IMODE(path.stat().st_mode)

    assert mode(cluster.config_dir / "admin-token") == 0o600
    assert mode(cluster.config_dir) == 0o700
    assert mode(cluster.data_dir / "keys.sqlite3") == 0o600
    stored = (cluster.data_dir / "keys.sqlite3").read_bytes()
    assert SECRETS and not any(k.rsplit("-", 1)[1].encode() in stored for k in SECRETS)


def test_no_key_or_token_appears_in_the_logs(cluster: ClusterProcess) -> None:
    token = (cluster.config_dir / "admin-token").read_text().strip()
    secrets = [token, *SECRETS, *(k.rsplit("-", 1)[1] for k in SECRETS)]
    ray_dir = Path(cluster.extra_env["RAY_TMPDIR"])
    logs = [
        cluster.data_dir / "cluster.log",
        *(p for p in ray_dir.rglob("*") if p.is_file() and not p.is_symlink()),
    ]
    assert len(logs) > 5, logs  # Ray's logs are there to be searched
    assert any("serve" in str(p) for p in logs)
    for path in logs:
        try:
            text = path.read_bytes()
        except OSError:
            continue
        for secret in secrets:
            assert secret.encode() not in text, f"a secret in {path}"
