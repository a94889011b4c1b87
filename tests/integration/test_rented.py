"""A model rented from a provider: `mlx_lm.server` on loopback plays the cloud, and the official
OpenAI client talks to the office's head, which sends that model's chat completions on to it."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from fractions import Fraction as F
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from cluster.cli.ports import free_port
from tests.harness import ClusterProcess, admin_get, head_cli, wait_for

pytestmark = pytest.mark.timeout(600)

KEY = "sk-office-rents-7c1e55d0"


@pytest.fixture(scope="module")
def heads(
    tmp_path_factory: pytest.TempPathFactory, demo_model_dir: Path
) -> Iterator[tuple[ClusterProcess, str, Path]]:
    """(the office's head, the cloud's base URL, the model the cloud serves): the cloud is
    `mlx_lm.server`, which speaks the OpenAI dialect and reports usage as the vendors do."""
    root = tmp_path_factory.mktemp("rented")
    port = free_port()
    log = open(root / "cloud.log", "wb")
    serve = ("--model", str(demo_model_dir), "--host", "127.0.0.1", "--port", str(port))
    cloud = subprocess.Popen(
        [sys.executable, "-m", "mlx_lm.server", *serve],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    ray_dir = tempfile.mkdtemp(prefix="mlr", dir="/tmp")  # short: Ray's socket paths are limited
    office = ClusterProcess(root / "office", extra_env={"RAY_TMPDIR": ray_dir})
    office.data_dir.mkdir()
    base = f"http://127.0.0.1:{port}/v1"
    try:
        wait_for(lambda: _up(f"{base}/models"), 120, "mlx_lm.server to listen")
        office.args = ("--no-local-agent", "--no-mdns")
        office.start(want_models=0)
        yield office, base, demo_model_dir
    finally:
        office.stop()
        cloud.terminate()
        cloud.wait(timeout=30)
        log.close()
        shutil.rmtree(ray_dir, ignore_errors=True)


def _up(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def test_a_routed_model_is_served_by_the_provider_and_recorded(
    heads: tuple[ClusterProcess, str, Path],
) -> None:
    office, base, model = heads
    add = ["providers", "add", "cloud", "--kind", "openai", "--base-url", base]
    made = head_cli(
        office, *add, "--key-env", "CLOUD_KEY", "--price", f"{model}=2,8", CLOUD_KEY=KEY
    )
    assert made.returncode == 0, made.stderr
    assert head_cli(office, "route", "gpt-x", "--to", f"cloud:{model}").returncode == 0

    oai = openai.OpenAI(base_url=f"{office.url}/v1", api_key="unused", max_retries=0)
    ask: dict[str, Any] = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 6}
    wait_for(lambda: _routed(office), 10, "the gateway to read the route")
    card = next(m for m in oai.models.list().data if m.id == "gpt-x")
    assert card.model_extra and card.model_extra["rented_from"] == "cloud"
    whole = oai.chat.completions.create(model="gpt-x", **ask)
    assert whole.model == "gpt-x" and whole.choices[0].message.content is not None
    chunks = list(
        oai.chat.completions.create(
            model="gpt-x", stream=True, stream_options={"include_usage": True}, **ask
        )
    )
    assert {c.model for c in chunks} == {"gpt-x"}
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert chunks[-1].usage is not None and not chunks[-1].choices
    served = [u for u in (whole.usage, chunks[-1].usage) if u is not None]
    assert len(served) == 2

    def rented() -> dict[str, Any]:
        groups = admin_get(office, "/admin/usage?by=node")["groups"]
        return next((g for g in groups if g["node"] == "provider:cloud"), {"requests": 0})

    wait_for(lambda: rented()["requests"] == 3, 15, "the office's ledger rows")  # with _routed's
    row = rented()
    assert row["ok"] == 3
    plain = list(oai.chat.completions.create(model="gpt-x", stream=True, **ask))
    assert plain and all(c.usage is None for c in plain)  # no usage chunk unless asked for
    wait_for(lambda: rented()["requests"] == 4, 15, "the plain stream's row")
    assert rented()["completion_tokens"] > row["completion_tokens"]
    assert rented()["requested_as"] == ["gpt-x"]

    report = admin_get(office, "/admin/cost?since=24h")
    assert not [n for n in report["nodes"] if n["node_id"].startswith("provider:")]
    (cloud,) = report["rented"]
    tokens = cloud["tokens"]
    by_hand = F(tokens["prompt"] * 2 + tokens["completion"] * 8, 1_000_000)  # $2 in, $8 out
    assert cloud["provider"] == "cloud" and cloud["unpriced_models"] == []
    assert cloud["cost_usd"] == float(by_hand) and tokens["completion"] > 0
    text = head_cli(office, "cost", "--url", office.url)
    assert f"rented from cloud: {cloud['requests']} requests" in text.stdout
    assert f"{model}: no local $/Mtok measured yet" in text.stdout  # no node here to compare
    (spent,) = [g for g in admin_get(office, "/admin/usage?by=model")["groups"] if g["provider"]]
    assert spent["provider"] == "cloud" and spent["model"] == str(model)
    assert spent["requests"] == 4 and spent["provider_usd"] == cloud["cost_usd"]
    usage = head_cli(office, "usage", "--by", "key", "--url", office.url).stdout
    assert "-, rented from cloud" in usage and f"{cloud['cost_usd']:.4f}" in usage
    metrics = httpx.get(f"{office.url}/metrics", timeout=30).text
    served = f'model="{model}"'
    assert f'rented_requests_total{{{served},outcome="ok",provider="cloud"}} 4.0' in metrics
    generated = f"{tokens['completion']}.0"
    assert f'rented_generation_tokens_total{{{served},provider="cloud"}} {generated}' in metrics
    assert f'meterless:rented_cost_usd_total{{provider="cloud"}} {cloud["cost_usd"]!r}' in metrics
    assert "provider:cloud" not in metrics  # not a node's series
    _the_key_is_nowhere(office)


def test_a_provider_down_is_a_clear_503(heads: tuple[ClusterProcess, str, Path]) -> None:
    office, _, _ = heads
    closed = f"http://127.0.0.1:{free_port()}/v1"
    add = ["providers", "add", "down", "--kind", "openai", "--base-url", closed]
    assert head_cli(office, *add, "--key-env", "K", K=KEY).returncode == 0
    assert head_cli(office, "route", "gpt-y", "--to", "down:any").returncode == 0
    body = {"model": "gpt-y", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}
    r = _post_until_routed(office, body)
    assert r.status_code == 503 and "down cannot be reached" in r.json()["error"]["message"]
    bad = httpx.post(
        f"{office.url}/v1/chat/completions", json={**body, "max_tokens": -1}, timeout=30
    )
    assert bad.status_code == 400 and bad.json()["error"]["message"]


def test_a_local_only_keys_requests_never_reach_the_provider(
    heads: tuple[ClusterProcess, str, Path],
) -> None:
    office, base, model = heads
    add = ["providers", "add", "private-cloud", "--kind", "openai", "--base-url", base]
    assert head_cli(office, *add, "--key-env", "K", K=KEY).returncode == 0
    assert head_cli(office, "route", "gpt-p", "--to", f"private-cloud:{model}").returncode == 0
    keys = {}
    for name, flags in (("private", ["--local-only"]), ("anyone", [])):
        made = head_cli(office, "keys", "create", name, *flags, "--json", "--url", office.url)
        assert made.returncode == 0, made.stderr
        keys[name] = json.loads(made.stdout)["key"]
    listed = head_cli(office, "keys", "list", "--url", office.url).stdout.splitlines()
    assert [r for r in listed if r.startswith("private ") and r.endswith("local only")]
    assert [r for r in listed if r.startswith("anyone ") and not r.endswith("local only")]
    body = {"model": "gpt-p", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
    assert _post_until_routed(office, body).status_code == 200
    log = office.data_dir.parent / "cloud.log"  # the provider's: a line per request it got
    wait_for(lambda: _served(log) > 0, 15, "the provider's log of the request")
    before = _served(log)

    private = openai.OpenAI(base_url=f"{office.url}/v1", api_key=keys["private"], max_retries=0)
    for stream in (False, True):
        with pytest.raises(openai.PermissionDeniedError) as refused:
            private.chat.completions.create(stream=stream, **body)
        assert "is local-only; gpt-p is served by provider private-cloud" in str(refused.value)
    anyone = openai.OpenAI(base_url=f"{office.url}/v1", api_key=keys["anyone"], max_retries=0)
    assert anyone.chat.completions.create(**body).choices
    # the provider logs requests in the order they came: the next line is the other key's
    wait_for(lambda: _served(log) > before, 15, "the provider's log of the other key's request")
    assert _served(log) == before + 1


def _served(log: Path) -> int:
    """Chat requests the provider (`mlx_lm.server`) has logged."""
    return log.read_text(errors="replace").count("POST /v1/chat/completions")


def _routed(office: ClusterProcess) -> bool:
    """One request for gpt-x, until the gateway has read its route (a 404 before)."""
    body = {"model": "gpt-x", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
    r = httpx.post(f"{office.url}/v1/chat/completions", json=body, timeout=60)
    return r.status_code == 200


def _post_until_routed(office: ClusterProcess, body: dict[str, Any]) -> httpx.Response:
    """POST until the gateway has read the new route (it looks at the files once a second)."""
    url = f"{office.url}/v1/chat/completions"
    answers: list[httpx.Response] = []
    wait_for(
        lambda: (
            answers.append(httpx.post(url, json=body, timeout=30)) or answers[-1].status_code != 404
        ),
        10,
        "the route to be read",
    )
    return answers[-1]


def _the_key_is_nowhere(office: ClusterProcess, key: str = KEY) -> None:
    """Not in the office's logs (its own and Ray's), its admin API's answers, or any process's
    arguments."""
    ray_dir = Path(office.extra_env["RAY_TMPDIR"])
    logs = [office.data_dir / "cluster.log", *ray_dir.rglob("*.log"), *ray_dir.rglob("*.out")]
    logs += list(ray_dir.rglob("*.err"))
    assert logs and not [p for p in logs if p.is_file() and key in p.read_text(errors="replace")]
    for path in ("/admin/nodes", "/admin/models", "/admin/usage", "/admin/cost", "/admin/aliases"):
        assert key not in json.dumps(admin_get(office, path))
    ps = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True, check=True)
    assert key not in ps.stdout
