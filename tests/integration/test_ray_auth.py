"""Ray's token auth under `cluster up`: pinned on with an owner-only token, required by Ray's
ports (which listen on every interface), and `RAY_AUTH_MODE=disabled` refused without
`--insecure`."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from cluster.access.ray_auth import FILE_NAME
from cluster.cli.ports import free_port
from tests.harness import ClusterProcess, share_models

pytestmark = pytest.mark.timeout(300)

RAY = str(Path(sys.executable).with_name("ray"))


@pytest.fixture(scope="module")
def cluster(
    tmp_path_factory: pytest.TempPathFactory, demo_model_dir: Path
) -> Iterator[ClusterProcess]:
    root = tmp_path_factory.mktemp("ray-auth")
    head = ClusterProcess(share_models(root / "head", demo_model_dir.parent), args=("--demo",))
    try:
        yield head.start()
    finally:
        head.stop()


def gcs_port(token_path: Path) -> int:
    """The port of the GCS this cluster started: the gcs_server whose environment names its
    token (other clusters may run on the machine)."""
    for proc in psutil.process_iter(["name"]):
        if proc.info["name"] != "gcs_server":
            continue
        try:
            if proc.environ().get("RAY_AUTH_TOKEN_PATH") != str(token_path):
                continue
            ports = [c.laddr.port for c in proc.net_connections("tcp") if c.status == "LISTEN"]
        except psutil.Error:
            continue
        return min(ports)
    raise AssertionError(f"no gcs_server runs with {token_path}")


def ray_status(port: int, home: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """`ray status` against the GCS, from a process with only `env` for credentials."""
    home.mkdir(exist_ok=True)  # no ~/.ray/auth_token of the developer's
    clean = {k: v for k, v in os.environ.items() if not k.startswith("RAY_AUTH")}
    return subprocess.run(
        [RAY, "status", "--address", f"127.0.0.1:{port}"],
        env={**clean, "HOME": str(home), **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_rays_ports_need_the_owner_only_token(cluster: ClusterProcess, tmp_path: Path) -> None:
    token = cluster.config_dir / FILE_NAME
    assert stat.S_IMODE(token.stat().st_mode) == 0o600
    port = gcs_port(token)
    wrong = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": "0" * 64}
    for env in ({"RAY_AUTH_MODE": "disabled"}, wrong):
        denied = ray_status(port, tmp_path / "home", **env)
        assert denied.returncode != 0
        assert "AuthenticationError" in denied.stdout + denied.stderr
    allowed = ray_status(
        port, tmp_path / "home", RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=str(token)
    )
    assert allowed.returncode == 0, allowed.stdout + allowed.stderr


def test_ray_without_token_auth_is_refused_unless_insecure(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "METERLESS_DATA_DIR": str(tmp_path / "data"),
        "METERLESS_CONFIG_DIR": str(tmp_path / "config"),
        "RAY_AUTH_MODE": "disabled",
    }
    out = subprocess.run(
        [sys.executable, "-m", "cluster.cli", "up", "--demo", "--port", str(free_port())],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 1
    assert "RAY_AUTH_MODE=disabled turns off Ray's token auth" in out.stderr
    assert "Traceback" not in out.stderr
