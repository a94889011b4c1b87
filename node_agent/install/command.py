"""`node-agent service` and `cluster service`: install, uninstall and show the agent or the head
as a service — systemd on Linux, launchd on macOS.

Every side effect goes through `Machine`, so that tests inject the platform and see the
commands that would run; every failure is a `ServiceError`, one line.
"""

from __future__ import annotations

import argparse
import getpass
import os
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from node_agent.install.layout import SYSUSERS_FILE, Placement, place
from node_agent.install.units import Platform, Role, sysusers_conf
from node_agent.trust import TokenError, decode_token

JOIN_TOKEN_ENV = "METERLESS_JOIN_TOKEN"
COMMANDS: dict[Role, tuple[str, str]] = {  # console script, and the module that is the same
    "agent": ("node-agent", "node_agent"),
    "head": ("cluster", "cluster.cli"),
}


class ServiceError(Exception):
    """A reason the service cannot be installed, removed or shown; one line."""


def _run(argv: Sequence[str]) -> int:
    return subprocess.run(argv, check=False).returncode


@dataclass(frozen=True, kw_only=True)
class Machine:
    """The facts about this machine that decide what is written where, and how to act on it."""

    platform: Platform
    root: bool
    home: Path
    user: str
    uid: int
    systemd: bool  # systemd is the running init (Linux)
    python: Path  # the interpreter meterless runs in
    run: Callable[[Sequence[str]], int] = field(default=_run, repr=False)

    @classmethod
    def this(cls) -> Machine:
        """This machine."""
        if sys.platform not in ("linux", "darwin"):
            raise ServiceError(f"services are installed on Linux and macOS, not {sys.platform}")
        sudo_user = os.environ.get("SUDO_USER", "")
        user = sudo_user or getpass.getuser()
        return cls(
            platform="darwin" if sys.platform == "darwin" else "linux",
            root=os.geteuid() == 0,
            home=Path(os.path.expanduser(f"~{user}")),
            user=user,
            uid=os.getuid(),
            systemd=Path("/run/systemd/system").is_dir(),
            python=Path(sys.executable),
        )


def add_scope_flags(parser: argparse.ArgumentParser) -> None:
    """--user / --system (default: --system as root, else --user) and --dry-run."""
    scope = parser.add_mutually_exclusive_group()
    scope.add_argument(
        "--system",
        dest="system",
        action="store_true",
        default=None,
        help="start at boot, as a system service (needs root; the default as root)",
    )
    scope.add_argument(
        "--user",
        dest="system",
        action="store_false",
        help="start at this user's login (the default when not root)",
    )


def command_argv(role: Role, machine: Machine) -> tuple[str, ...]:
    """How to start `role` from the installation this command runs in."""
    script, module = COMMANDS[role]
    beside = machine.python.parent / script  # venvs, pipx and uv tools put both in one bin/
    return (str(beside),) if beside.exists() else (str(machine.python), "-m", module)


def placement(
    role: Role,
    machine: Machine,
    system: bool | None,
    args: tuple[str, ...] = (),
    environment: tuple[tuple[str, str], ...] = (),
    *,
    acting: bool = True,
    installing: bool = True,
) -> Placement:
    """What would be installed for `role` on `machine`; ServiceError when it cannot be (a dry
    run, not `acting`, shows the files even where it could not install them)."""
    system = machine.root if system is None else system
    if acting:
        _can_act(machine, system)
    argv = (*command_argv(role, machine), *args)
    if installing and machine.platform == "linux" and system and _under_home(Path(argv[0])):
        raise ServiceError(
            f"the meterless user cannot run {argv[0]} (it is in a home directory): install "
            "meterless into /opt/meterless (see deploy/README.md) and run its "
            f"`{COMMANDS[role][0]} service install`, or use --user"
        )
    return place(
        role,
        machine.platform,
        system=system,
        argv=argv,
        environment=environment,
        user=machine.user,
        home=machine.home,
    )


def _can_act(machine: Machine, system: bool) -> None:
    if machine.platform == "linux" and not machine.systemd:
        raise ServiceError(
            "systemd is not running on this machine: start it under your own supervisor, or "
            "use deploy/compose"
        )
    if system and not machine.root:
        raise ServiceError("--system needs root: run it with sudo, or install with --user")


def _under_home(path: Path) -> bool:
    return path.is_relative_to("/home") or path.is_relative_to("/root")


def install(
    plan: Placement, machine: Machine, *, dry_run: bool, token: str | None = None
) -> list[str]:
    """Write the service (and the token, 0600), enable and start it; the lines to print."""
    svc = plan.service
    lines = [f"{'would write' if dry_run else 'wrote'} {plan.path}:", plan.text.decode()]
    if svc.token_file is not None and (token or dry_run):
        lines.append(
            f"{'would write' if dry_run else 'wrote'} the join token to "
            f"{svc.token_file} (mode 0600)"
        )
    steps = _start_steps(plan, machine)
    if plan.platform == "linux" and svc.system:
        lines.append(f"{'would write' if dry_run else 'wrote'} {SYSUSERS_FILE}: the meterless user")
    if dry_run:
        return [*lines, *(f"would run: {' '.join(step)}" for step in steps)]
    made = _make_dirs(plan)
    if svc.token_file is not None and token:
        _write_private(svc.token_file, token + "\n")
        made.append(svc.token_file)
    if plan.platform == "darwin" and svc.system and made:  # the job's user reads them, not root
        _run_or_fail(machine, ["chown", svc.user, *map(str, made)])
    if plan.platform == "linux" and svc.system:
        _write(SYSUSERS_FILE, sysusers_conf().encode(), 0o644)
    _write(plan.path, plan.text, 0o644)
    for step in steps:
        _run_or_fail(machine, step)
    return [
        *lines,
        f"started {svc.name if plan.platform == 'linux' else svc.label}",
        f"follow its log: {log_hint(plan)}",
    ]


def uninstall(plan: Placement, machine: Machine, *, dry_run: bool) -> list[str]:
    """Stop and disable the service, remove its file and token; the lines to print."""
    svc = plan.service
    files = [plan.path, *([svc.token_file] if svc.token_file is not None else [])]
    steps = _stop_steps(plan, machine)
    if dry_run:
        return [
            *(f"would run: {' '.join(s)}" for s in steps),
            *(f"would remove {f}" for f in files),
        ]
    if not plan.path.exists():
        raise ServiceError(f"{plan.path} is not installed")
    for step in steps:
        machine.run(step)  # stopping what already stopped is fine
    for path in files:
        path.unlink(missing_ok=True)
    if plan.platform == "linux":
        machine.run(_systemctl(svc.system, "daemon-reload"))
    return [f"removed {f}" for f in files] + ["its data directory is kept"]


def status(plan: Placement, machine: Machine) -> int:
    """Let the service manager show the service; its exit code."""
    if not plan.path.exists():
        raise ServiceError(f"not installed ({plan.path} does not exist)")
    svc = plan.service
    if plan.platform == "linux":
        return machine.run([*_systemctl(svc.system, "status", "--no-pager", svc.name)])
    return machine.run(["launchctl", "print", f"{_domain(plan, machine)}/{svc.label}"])


def log_hint(plan: Placement) -> str:
    """The command that follows the service's log."""
    svc = plan.service
    if plan.platform == "linux":
        return f"journalctl {'' if svc.system else '--user '}-u {svc.name} -f"
    log_dir = svc.home / "Library" / "Logs" / "meterless"
    return f"tail -F {log_dir / ('agent.log' if svc.role == 'agent' else 'head.out')}"


def _systemctl(system: bool, *args: str) -> list[str]:
    return ["systemctl", *([] if system else ["--user"]), *args]


def _domain(plan: Placement, machine: Machine) -> str:
    return "system" if plan.service.system else f"gui/{machine.uid}"


def _start_steps(plan: Placement, machine: Machine) -> list[list[str]]:
    svc = plan.service
    if plan.platform == "linux":
        sysusers = [["systemd-sysusers", str(SYSUSERS_FILE)]] if svc.system else []
        return [
            *sysusers,
            _systemctl(svc.system, "daemon-reload"),
            _systemctl(svc.system, "enable", "--now", svc.name),
        ]
    domain = _domain(plan, machine)
    return [
        ["launchctl", "bootstrap", domain, str(plan.path)],
        ["launchctl", "enable", f"{domain}/{svc.label}"],
    ]


def _stop_steps(plan: Placement, machine: Machine) -> list[list[str]]:
    svc = plan.service
    if plan.platform == "linux":
        return [_systemctl(svc.system, "disable", "--now", svc.name)]
    return [["launchctl", "bootout", f"{_domain(plan, machine)}/{svc.label}"]]


def _make_dirs(plan: Placement) -> list[Path]:
    """Create the token's and (launchd) the logs' folders; those that were created."""
    svc = plan.service
    wanted = [svc.token_file.parent] if svc.token_file is not None else []
    if plan.platform == "darwin":
        wanted.append(svc.home / "Library" / "Logs" / "meterless")
    made: list[Path] = []
    for folder in wanted:
        missing = [d for d in (folder, *folder.parents) if not d.exists()]
        try:
            folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as exc:
            raise ServiceError(f"cannot create {folder}: {exc.strerror or exc}") from None
        made += reversed(missing)
    return made


def _run_or_fail(machine: Machine, argv: list[str]) -> None:
    if (code := machine.run(argv)) != 0:
        raise ServiceError(f"`{' '.join(argv)}` failed (exit {code})")


def _write(path: Path, data: bytes, mode: int) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        path.chmod(mode)
    except OSError as exc:
        raise ServiceError(f"cannot write {path}: {exc.strerror or exc}") from None


def _write_private(path: Path, text: str) -> None:
    """Created 0600 from the start: the token is never readable by others, even for a moment."""
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(text)
        path.chmod(0o600)
    except OSError as exc:
        raise ServiceError(f"cannot write {path}: {exc.strerror or exc}") from None


def join_token(token_file: Path | None, interactive: bool) -> str | None:
    """The join token to install: $METERLESS_JOIN_TOKEN, a file, or asked for; checked."""
    if token_file is not None:
        try:
            text = token_file.read_text()
        except OSError as exc:
            raise ServiceError(f"cannot read {token_file}: {exc.strerror or exc}") from None
    elif os.environ.get(JOIN_TOKEN_ENV, "").strip():
        text = os.environ[JOIN_TOKEN_ENV]
    elif interactive and sys.stdin.isatty():
        text = getpass.getpass("join token (`cluster join-token` on the head; empty: none): ")
    else:
        return None
    if not text.strip():
        return None
    try:
        decode_token(text)
    except TokenError as exc:
        raise ServiceError(f"join token: {exc}") from None
    return text.strip()
