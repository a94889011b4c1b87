"""The endpoint over TLS (`cluster up --tls self-signed`): the official `openai` client trusts
it through the pinned certificate and only then; the CLI by --ca or --fingerprint, and a wrong
fingerprint sends nothing."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from cluster.access import tls
from tests.harness import ClusterProcess, share_models

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def cluster(
    tmp_path_factory: pytest.TempPathFactory, demo_model_dir: Path
) -> Iterator[ClusterProcess]:
    root = tmp_path_factory.mktemp("tls")
    head = ClusterProcess(
        share_models(root / "head", demo_model_dir.parent), args=("--demo",), tls=True
    )
    try:
        yield head.start()
    finally:
        head.stop()


def cli(cluster: ClusterProcess, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cluster.cli", "nodes", "--json", "--url", cluster.url, *args],
        env=cluster.env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_the_openai_client_trusts_the_pinned_certificate_only(cluster: ClusterProcess) -> None:
    assert cluster.url.startswith("https://")
    pinned = openai.OpenAI(
        base_url=f"{cluster.url}/v1",
        api_key="unused",
        max_retries=0,
        http_client=httpx.Client(verify=cluster.verify),
    )
    answer = pinned.chat.completions.create(
        model="demo", messages=[{"role": "user", "content": "Hello"}], max_tokens=4
    )
    assert answer.usage is not None and answer.usage.completion_tokens > 0
    unpinned = openai.OpenAI(base_url=f"{cluster.url}/v1", api_key="unused", max_retries=0)
    with pytest.raises(openai.APIConnectionError):
        unpinned.models.list()
    with pytest.raises(httpx.HTTPError):  # nothing is served in clear on the port
        httpx.get(cluster.url.replace("https://", "http://") + "/health", timeout=5)


def test_the_cli_trusts_it_by_ca_or_fingerprint(cluster: ClusterProcess) -> None:
    cert = cluster.config_dir / tls.CERT_FILE
    fingerprint = tls.fingerprint(cert.read_bytes())
    by_ca = cli(cluster, "--ca", str(cert))
    by_fingerprint = cli(cluster, "--fingerprint", fingerprint.lower().replace(":", ""))
    for out in (by_ca, by_fingerprint):
        assert out.returncode == 0, out.stderr
        assert "demo" in out.stdout
    unknown = cli(cluster)
    assert unknown.returncode == 1 and "CERTIFICATE_VERIFY_FAILED" in unknown.stderr
    wrong = cli(cluster, "--fingerprint", "00" * 32)
    assert wrong.returncode == 1
    assert f"presented a certificate with SHA-256 {fingerprint}" in wrong.stderr
    assert "nothing was sent" in wrong.stderr and "Traceback" not in wrong.stderr


def test_the_dashboards_session_cookie_is_secure_over_tls(cluster: ClusterProcess) -> None:
    token = (cluster.config_dir / "admin-token").read_text().strip()
    with httpx.Client(base_url=cluster.url, verify=cluster.verify, timeout=30) as client:
        r = client.post("/ui/api/sign-in", json={"token": token})
        assert r.status_code == 200
        cookies = r.headers.get_list("set-cookie")
        assert len(cookies) == 2 and all("; Secure" in c for c in cookies)
        assert client.get("/ui/api/overview").json()["nodes"]
