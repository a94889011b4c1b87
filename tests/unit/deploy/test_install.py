"""`node-agent service` and `cluster service`, with the platform injected: what they would write
and run on Linux and macOS, what they write here, and their one-line errors."""

from __future__ import annotations

import os
import plistlib
import stat
from collections.abc import Sequence
from pathlib import Path

import pytest

from cluster.cli.main import main as cluster_main
from node_agent.install import command
from node_agent.install.cli import agent_main
from node_agent.install.command import Machine
from node_agent.install.units import Platform
from node_agent.trust import ClusterSecret, encode_token

TOKEN = encode_token(ClusterSecret(bytes(range(32))))


class Recorder:
    """Stands in for running commands: remembers them, answers `code`."""

    def __init__(self, code: int = 0) -> None:
        self.code = code
        self.ran: list[list[str]] = []

    def __call__(self, argv: Sequence[str]) -> int:
        self.ran.append(list(argv))
        return self.code


def machine(
    tmp_path: Path,
    platform: Platform = "linux",
    *,
    root: bool = False,
    systemd: bool = True,
    python: Path = Path("/opt/meterless/bin/python"),
    run: Recorder | None = None,
) -> Machine:
    return Machine(
        platform=platform,
        root=root,
        home=tmp_path / "home",
        user="ada",
        uid=501,
        systemd=systemd,
        python=python,
        run=run or Recorder(),
    )


@pytest.fixture(autouse=True)
def _no_token_in_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("METERLESS_JOIN_TOKEN", raising=False)


@pytest.fixture
def on(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> list[Machine]:
    """Make `Machine.this()` answer the machine put in the list."""
    chosen: list[Machine] = []
    monkeypatch.setattr(Machine, "this", classmethod(lambda cls: chosen[0]))
    return chosen


def test_linux_system_dry_run_prints_the_unit_and_where(
    on: list[Machine], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    on.append(machine(tmp_path, root=True, systemd=False))  # a dry run needs neither
    assert (
        agent_main(["service", "install", "--dry-run", "--model", "demo", "--kwh-usd", "0.3"]) == 0
    )
    out = capsys.readouterr().out
    assert out.startswith("would write /etc/systemd/system/meterless-agent.service:\n[Unit]\n")
    for line in (
        "ExecStart=/opt/meterless/bin/python -m node_agent",
        "Environment=METERLESS_MODELS=demo",
        "Environment=METERLESS_KWH_USD=0.3",
        "LoadCredential=join-token:/etc/meterless/join-token",
        "would write the join token to /etc/meterless/join-token (mode 0600)",
        "would run: systemctl enable --now meterless-agent.service",
    ):
        assert line in out.splitlines(), line
    assert not (tmp_path / "home").exists()


def test_macos_system_dry_run_is_a_launch_daemon_as_the_user(
    on: list[Machine], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    on.append(machine(tmp_path, "darwin", root=True))
    assert agent_main(["service", "install", "--system", "--dry-run", "--name", "mini-2"]) == 0
    out = capsys.readouterr().out
    head, _, rest = out.partition("\n")
    assert head == "would write /Library/LaunchDaemons/dev.meterless.agent.plist:"
    plist = plistlib.loads(rest[: rest.index("</plist>") + len("</plist>")].encode())
    assert plist["UserName"] == "ada" and plist["Label"] == "dev.meterless.agent"
    env = plist["EnvironmentVariables"]
    assert env["METERLESS_NAME"] == "mini-2"
    assert env["METERLESS_JOIN_TOKEN_FILE"] == str(tmp_path / "home/.config/meterless/join-token")
    assert (
        "would run: launchctl bootstrap system /Library/LaunchDaemons/dev.meterless.agent.plist"
        in out
    )


def test_macos_user_dry_run_is_a_launch_agent(
    on: list[Machine], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    on.append(machine(tmp_path, "darwin"))
    assert cluster_main(["service", "install", "--dry-run", "--port", "8080"]) == 0
    out = capsys.readouterr().out
    agents = tmp_path / "home/Library/LaunchAgents/dev.meterless.head.plist"
    assert out.startswith(f"would write {agents}:")
    assert "<string>--port</string>\n\t\t<string>8080</string>" in out
    assert f"would run: launchctl bootstrap gui/501 {agents}" in out
    assert "UserName" not in out and "join token" not in out


def test_cluster_service_dry_run_on_linux(
    on: list[Machine], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    on.append(machine(tmp_path, root=True))
    assert cluster_main(["service", "install", "--dry-run", "--no-local-agent"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "would write /etc/systemd/system/meterless-head.service:"
    assert (
        "ExecStart=/opt/meterless/bin/python -m cluster.cli up --host 0.0.0.0 --port 8000 "
        "--no-local-agent" in out
    )
    assert "Environment=METERLESS_CONFIG_DIR=/var/lib/meterless/config" in out


@pytest.mark.parametrize(
    "kwargs, argv, needle",
    [
        ({"systemd": False}, ["install"], "systemd is not running"),
        ({}, ["install", "--system"], "--system needs root"),
        (
            {"root": True, "python": Path("/home/ada/.local/bin/python")},
            ["install"],
            "/opt/meterless",
        ),
        ({}, ["status"], "not installed"),
        ({}, ["uninstall"], "is not installed"),
    ],
)
def test_errors_are_one_line(
    on: list[Machine],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    kwargs: dict[str, object],
    argv: list[str],
    needle: str,
) -> None:
    on.append(machine(tmp_path, **kwargs))  # type: ignore[arg-type]
    assert agent_main(["service", *argv]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("node-agent service: ") and needle in err


def test_user_install_writes_the_unit_and_a_private_token_then_starts_it(
    on: list[Machine],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    recorder = Recorder()
    on.append(machine(tmp_path, run=recorder))
    monkeypatch.setenv("METERLESS_JOIN_TOKEN", TOKEN)
    assert agent_main(["service", "install", "--model", "demo"]) == 0
    unit = tmp_path / "home/.config/systemd/user/meterless-agent.service"
    token = tmp_path / "home/.config/meterless/join-token"
    assert "Environment=METERLESS_MODELS=demo" in unit.read_text()
    assert f"Environment=METERLESS_JOIN_TOKEN_FILE={token}" in unit.read_text()
    assert token.read_text().strip() == TOKEN
    assert stat.S_IMODE(token.stat().st_mode) == 0o600
    assert recorder.ran == [
        ["systemctl", "--user", "daemon-reload"],
        ["systemctl", "--user", "enable", "--now", "meterless-agent.service"],
    ]
    out = capsys.readouterr().out
    assert TOKEN not in out and "journalctl --user -u meterless-agent.service -f" in out

    recorder.ran.clear()
    assert agent_main(["service", "uninstall"]) == 0
    assert not unit.exists() and not token.exists()
    assert recorder.ran[0] == ["systemctl", "--user", "disable", "--now", "meterless-agent.service"]


def test_a_bad_token_is_refused_before_anything_is_written(
    on: list[Machine],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    on.append(machine(tmp_path))
    monkeypatch.setenv("METERLESS_JOIN_TOKEN", "nonsense")
    assert agent_main(["service", "install"]) == 1
    assert "join token: not a join token" in capsys.readouterr().err
    assert not (tmp_path / "home").exists()


def test_a_failing_service_manager_is_one_line(
    on: list[Machine], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    on.append(machine(tmp_path, run=Recorder(code=1)))
    assert agent_main(["service", "install"]) == 1
    assert "`systemctl --user daemon-reload` failed (exit 1)" in capsys.readouterr().err


def test_the_command_is_the_console_script_beside_the_python(tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "node-agent").touch()
    here = machine(tmp_path, python=bin_dir / "python")
    assert command.command_argv("agent", here) == (str(bin_dir / "node-agent"),)
    assert command.command_argv("head", here) == (str(bin_dir / "python"), "-m", "cluster.cli")


def test_status_asks_the_service_manager(on: list[Machine], tmp_path: Path) -> None:
    recorder = Recorder(code=3)
    on.append(machine(tmp_path, "darwin", run=recorder))
    plist = tmp_path / "home/Library/LaunchAgents/dev.meterless.agent.plist"
    plist.parent.mkdir(parents=True)
    plist.touch()
    assert agent_main(["service", "status"]) == 3
    assert recorder.ran == [["launchctl", "print", "gui/501/dev.meterless.agent"]]
    assert os.path.exists(plist)
