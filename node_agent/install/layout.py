"""Where a service's files go on each platform and scope, and the service they describe (pure)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from node_agent.install.units import (
    SERVICE_USER,
    Platform,
    Role,
    Service,
    launchd_plist,
    systemd_unit,
)

STATE_DIR = Path("/var/lib/meterless")  # the system units' StateDirectory=meterless
SYSTEM_TOKEN_FILE = Path("/etc/meterless/join-token")
SYSUSERS_FILE = Path("/etc/sysusers.d/meterless.conf")
DEFAULT_PREFIX = Path("/opt/meterless/bin")  # the documented system install: a venv in /opt


@dataclass(frozen=True, kw_only=True)
class Placement:
    """A service and the file that describes it to the service manager."""

    service: Service
    platform: Platform
    path: Path

    @property
    def text(self) -> bytes:
        """The file's contents."""
        if self.platform == "darwin":
            return launchd_plist(self.service)
        return systemd_unit(self.service).encode()


def place(
    role: Role,
    platform: Platform,
    *,
    system: bool,
    argv: tuple[str, ...],
    environment: tuple[tuple[str, str], ...] = (),
    user: str = SERVICE_USER,
    home: Path,
) -> Placement:
    """Where `role`'s service goes; `user` and `home` are whom it runs as, except a systemd
    system unit, which runs as the `meterless` user in its state directory."""
    if platform == "linux" and system:
        home, user = STATE_DIR, SERVICE_USER
        environment = (*environment, ("METERLESS_DATA_DIR", str(STATE_DIR)))
        if role == "head":
            environment = (*environment, ("METERLESS_CONFIG_DIR", str(STATE_DIR / "config")))
    token = SYSTEM_TOKEN_FILE if platform == "linux" and system else token_file(home)
    svc = Service(
        role=role,
        system=system,
        argv=argv,
        environment=environment,
        user=user,
        home=home,
        token_file=token if role == "agent" else None,
    )
    return Placement(service=svc, platform=platform, path=service_file(svc, platform, home))


def token_file(home: Path) -> Path:
    """Where a user's join token is kept (0600): beside the rest of meterless's config."""
    return home / ".config" / "meterless" / "join-token"


def service_file(svc: Service, platform: Platform, home: Path) -> Path:
    """Where the service manager looks for the service's file."""
    if platform == "darwin":
        folder = Path("/Library/LaunchDaemons") if svc.system else home / "Library/LaunchAgents"
        return folder / f"{svc.label}.plist"
    if svc.system:
        return Path("/etc/systemd/system") / svc.name
    return home / ".config" / "systemd" / "user" / svc.name


def documented(role: Role, platform: Platform) -> Placement:
    """The system service as `deploy/` ships it: the documented install in /opt/meterless."""
    command = "node-agent" if role == "agent" else "cluster"
    args = () if role == "agent" else ("up", "--host", "0.0.0.0")
    argv = (str(DEFAULT_PREFIX / command), *args)
    home = Path("/Users") / SERVICE_USER if platform == "darwin" else STATE_DIR
    return place(role, platform, system=True, argv=argv, home=home)
