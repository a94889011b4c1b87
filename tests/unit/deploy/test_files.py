"""Every file under deploy/ checked by the tool that will read it, and kept in step with the code.

systemd units: `systemd-analyze verify` in a root that has the documented install's commands;
launchd jobs: plistlib round trip and the keys launchd needs; the compose file: the Compose
Specification's JSON schema (as check-jsonschema ships it; the docker CLI is seldom there).
"""

from __future__ import annotations

import os
import plistlib
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from node_agent.install.units import LAUNCHD_REQUIRED
from scripts.gen_deploy import DEPLOY, expected

SYSTEMD_UNITS = sorted((DEPLOY / "systemd").glob("*.service"))
LAUNCHD_JOBS = sorted((DEPLOY / "launchd").glob("*.plist"))
COMPOSE = DEPLOY / "compose" / "compose.yaml"


def test_deploy_is_what_the_install_commands_write() -> None:
    stale = [str(p.relative_to(DEPLOY)) for p, text in expected().items() if _read(p) != text]
    assert not stale, f"deploy/ is stale: {stale}; run `python -m scripts.gen_deploy`"
    assert len(SYSTEMD_UNITS) == 2 and len(LAUNCHD_JOBS) == 2


def _read(path: Path) -> bytes:
    return path.read_bytes() if path.exists() else b""


def systemd_analyze() -> str:
    """The tool's path; a skip where it is missing (`make test` installs it), a failure in CI."""
    if tool := shutil.which("systemd-analyze"):
        return tool
    if os.environ.get("CI"):
        pytest.fail("systemd-analyze is missing: `make test` installs the systemd package")
    pytest.skip("systemd-analyze is missing (`make test` installs the systemd package)")


def verify_root(tmp_path: Path, unit: Path) -> Path:
    """A root with the system's units and the unit's commands, as the documented install has."""
    (tmp_path / "usr/lib/systemd").mkdir(parents=True)
    shutil.copytree("/usr/lib/systemd/system", tmp_path / "usr/lib/systemd/system", symlinks=True)
    for line in unit.read_text().splitlines():
        if line.startswith("ExecStart="):
            command = tmp_path / line.removeprefix("ExecStart=").split()[0].lstrip("/")
            command.parent.mkdir(parents=True, exist_ok=True)
            command.write_text("#!/bin/sh\n")
            command.chmod(0o755)
    (tmp_path / "etc/systemd/system").mkdir(parents=True)
    shutil.copy(unit, tmp_path / "etc/systemd/system" / unit.name)
    return tmp_path


def verify(tool: str, root: Path, name: str) -> str:
    """What `systemd-analyze verify` says about the unit (nothing when it is fine)."""
    done = subprocess.run(
        [tool, "verify", f"--root={root}", f"/etc/systemd/system/{name}"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    return (done.stdout + done.stderr).strip() + ("" if done.returncode == 0 else " (failed)")


@pytest.mark.parametrize("unit", SYSTEMD_UNITS, ids=lambda p: p.name)
def test_systemd_units_verify(unit: Path, tmp_path: Path) -> None:
    tool = systemd_analyze()
    assert verify(tool, verify_root(tmp_path, unit), unit.name) == ""


def test_systemd_verify_catches_a_bad_unit(tmp_path: Path) -> None:
    tool = systemd_analyze()
    bad = tmp_path / "meterless-agent.service"
    bad.write_text(SYSTEMD_UNITS[0].read_text().replace("KillMode=mixed", "KillMode=mixedd"))
    assert "kill mode" in verify(tool, verify_root(tmp_path / "root", bad), bad.name)


def test_systemd_units_are_hardened_and_keep_the_token_off_argv() -> None:
    agent = (DEPLOY / "systemd" / "meterless-agent.service").read_text()
    for line in (
        "User=meterless",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "StateDirectory=meterless",
        "PrivateTmp=yes",
        "Restart=on-failure",
        "StartLimitBurst=5",
        "KillMode=mixed",
        "LoadCredential=join-token:/etc/meterless/join-token",
        "Environment=METERLESS_JOIN_TOKEN_FILE=%d/join-token",
    ):
        assert line in agent.splitlines(), line
    assert "--join-token" not in agent and "METERLESS_JOIN_TOKEN=" not in agent


@pytest.mark.parametrize("job", LAUNCHD_JOBS, ids=lambda p: p.name)
def test_launchd_jobs_round_trip_with_the_keys_launchd_needs(job: Path) -> None:
    data = plistlib.loads(job.read_bytes())
    assert plistlib.loads(plistlib.dumps(data)) == data
    assert all(key in data for key in LAUNCHD_REQUIRED)
    assert data["Label"] == job.stem and data["ProgramArguments"][0].startswith("/")
    assert data["KeepAlive"] == {"SuccessfulExit": False} and data["ThrottleInterval"] >= 10
    assert data["UserName"] == "meterless" and data["RunAtLoad"] is True
    assert not any("token" in arg for arg in data["ProgramArguments"])


def test_the_agent_job_reads_its_token_from_a_file_and_logs_to_a_bounded_one() -> None:
    env = plistlib.loads((DEPLOY / "launchd" / "dev.meterless.agent.plist").read_bytes())[
        "EnvironmentVariables"
    ]
    assert env["METERLESS_JOIN_TOKEN_FILE"].endswith("/join-token")
    assert env["METERLESS_LOG_FILE"].endswith("/agent.log")
    assert "METERLESS_JOIN_TOKEN" not in env


def check_compose(path: Path) -> subprocess.CompletedProcess[str]:
    """check-jsonschema against the Compose Specification's schema."""
    schema = ("--builtin-schema", "vendor.compose-spec")
    return subprocess.run(
        [sys.executable, "-m", "check_jsonschema", *schema, str(path)],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_the_compose_file_follows_the_compose_specification() -> None:
    done = check_compose(COMPOSE)
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_compose_check_catches_a_bad_file(tmp_path: Path) -> None:
    bad = tmp_path / "compose.yaml"
    bad.write_text(COMPOSE.read_text().replace("network_mode: host", "network_mode: [host]", 1))
    assert check_compose(bad).returncode != 0


def test_the_compose_agent_has_the_gpu_host_networking_and_a_model_volume() -> None:
    import yaml

    agent = yaml.safe_load(COMPOSE.read_text())["services"]["agent"]
    assert agent["network_mode"] == "host"
    [device] = agent["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia" and "gpu" in device["capabilities"]
    assert any(v.endswith(":/data") for v in agent["volumes"])
    assert agent["environment"]["METERLESS_JOIN_TOKEN_FILE"] == "/run/secrets/join-token"
    dockerfile = (DEPLOY / "compose" / "Dockerfile").read_text()
    assert "FROM ${VLLM_IMAGE}" in dockerfile and "vllm/vllm-openai:" in dockerfile
