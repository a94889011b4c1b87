"""The service files for the agent and the head: systemd units and launchd property lists (pure).

One source for both: `node-agent service install` and `cluster service install` write what these
functions render for this machine, and `deploy/` holds what they render for the documented
defaults (`python -m scripts.gen_deploy` writes it; `make test` checks it is up to date).
"""

from __future__ import annotations

import plistlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

Role = Literal["agent", "head"]
Platform = Literal["linux", "darwin"]

SERVICE_USER = "meterless"
CREDENTIAL = "join-token"  # the LoadCredential= name; the file is $CREDENTIALS_DIRECTORY/join-token
TOKEN_FILE_ENV = "METERLESS_JOIN_TOKEN_FILE"
LOG_FILE_ENV = "METERLESS_LOG_FILE"
DESCRIPTIONS: dict[Role, str] = {
    "agent": "meterless node agent",
    "head": "meterless head (cluster up)",
}
# How long a clean stop may take before SIGKILL: the agent's mDNS goodbye and unloads; the
# head's ledger flush (10 s), its local agent, and Ray's shutdown.
STOP_TIMEOUT_S: dict[Role, int] = {"agent": 60, "head": 120}
RESTART_DELAY_S = 5
START_LIMIT = (5, 300)  # at most 5 starts in 300 s, then the unit stays failed
THROTTLE_S = 10  # launchd: at least this long between starts


@dataclass(frozen=True, kw_only=True)
class Service:
    """One service to run: what, as whom, with which settings, and where its files are."""

    role: Role
    system: bool  # started at boot (systemd system unit, LaunchDaemon); else at the user's login
    argv: tuple[str, ...]  # the command; never a secret
    environment: tuple[tuple[str, str], ...] = ()  # METERLESS_* settings; never a secret
    user: str = SERVICE_USER  # whom a system service runs as
    home: Path  # the service's HOME and data dir
    token_file: Path | None = None  # the 0600 file holding the join token (agent only)
    log_dir: Path | None = None  # launchd: where its log files go

    @property
    def name(self) -> str:
        """The systemd unit's name."""
        return f"meterless-{self.role}.service"

    @property
    def label(self) -> str:
        """The launchd job's label."""
        return f"dev.meterless.{self.role}"


# --- systemd ------------------------------------------------------------------------------------

_HARDENING = (
    ("NoNewPrivileges", "yes"),
    ("ProtectSystem", "strict"),  # all of / read-only but the state directory below
    ("ProtectHome", "yes"),
    ("PrivateTmp", "yes"),
    ("ProtectKernelTunables", "yes"),
    ("ProtectKernelModules", "yes"),
    ("ProtectKernelLogs", "yes"),
    ("ProtectControlGroups", "yes"),
    ("ProtectClock", "yes"),
    ("ProtectHostname", "yes"),
    ("RestrictSUIDSGID", "yes"),
    ("RestrictRealtime", "yes"),
    ("RestrictNamespaces", "yes"),
    ("LockPersonality", "yes"),
    ("SystemCallArchitectures", "native"),
    ("UMask", "0077"),
)  # No PrivateDevices: vLLM needs /dev/nvidia*. No MemoryDenyWriteExecute: torch and Ray JIT.


def systemd_unit(svc: Service) -> str:
    """The unit file's text."""
    unit = [
        ("Description", DESCRIPTIONS[svc.role]),
        ("Documentation", "man:systemd.exec(5)"),
        ("After", "network-online.target"),
        ("Wants", "network-online.target"),
        ("StartLimitIntervalSec", str(START_LIMIT[1])),
        ("StartLimitBurst", str(START_LIMIT[0])),
    ]
    service = [("Type", "exec")]
    if svc.system:
        service += [("User", svc.user), ("Group", svc.user)]
    service.append(("ExecStart", " ".join(_exec_word(a) for a in svc.argv)))
    env = [*svc.environment, ("HOME", str(svc.home))] if svc.system else [*svc.environment]
    service += [("Environment", _env_assignment(k, v)) for k, v in env]
    if svc.token_file is not None and svc.system:
        # Read by systemd as root, handed to the agent in a private directory: the file stays
        # root's, 0600, and never reaches argv or the environment.
        service.append(("LoadCredential", f"{CREDENTIAL}:{_escape(str(svc.token_file))}"))
        service.append(("Environment", f"{TOKEN_FILE_ENV}=%d/{CREDENTIAL}"))
    elif svc.token_file is not None:
        service.append(("Environment", _env_assignment(TOKEN_FILE_ENV, str(svc.token_file))))
    if svc.system:
        service += [("StateDirectory", "meterless"), ("StateDirectoryMode", "0750")]
        service += _HARDENING
    else:
        service.append(("NoNewPrivileges", "yes"))
    service += [
        ("Restart", "on-failure"),
        ("RestartSec", str(RESTART_DELAY_S)),
        # SIGTERM to the main process only: it stops its children itself (the head's Ray and
        # local agent, vLLM's engine), in order; what is left gets SIGKILL after it exits.
        ("KillMode", "mixed"),
        ("TimeoutStopSec", str(STOP_TIMEOUT_S[svc.role])),
    ]
    target = "multi-user.target" if svc.system else "default.target"
    return _ini([("Unit", unit), ("Service", service), ("Install", [("WantedBy", target)])])


def _ini(sections: list[tuple[str, list[tuple[str, str]]]]) -> str:
    blocks = ["\n".join([f"[{name}]", *(f"{k}={v}" for k, v in pairs)]) for name, pairs in sections]
    return "\n\n".join(blocks) + "\n"


def _escape(text: str) -> str:
    """Specifiers (`%`) and variable references (`$`) taken literally."""
    return text.replace("%", "%%").replace("$", "$$")


def _exec_word(word: str) -> str:
    """One ExecStart= argument, quoted where systemd would split or unescape it."""
    word = _escape(word)
    if word and not re.search(r"[\s\"'\\;]", word):
        return word
    return '"' + word.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _env_assignment(key: str, value: str) -> str:
    """One Environment= assignment, quoted where it has spaces or quotes."""
    text = f"{key}={value.replace('%', '%%')}"
    if not re.search(r"[\s\"'\\]", text):
        return text
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def sysusers_conf() -> str:
    """The sysusers.d(5) line that creates the unprivileged user the system units run as."""
    return (
        "# The unprivileged user of meterless's system units; its home is their state directory.\n"
        f'u {SERVICE_USER} - "meterless inference cluster" /var/lib/meterless\n'
    )


# --- launchd ------------------------------------------------------------------------------------


def launchd_plist(svc: Service) -> bytes:
    """The property list's bytes (XML)."""
    log_dir = svc.log_dir or svc.home / "Library" / "Logs" / "meterless"
    env = {**dict(svc.environment), "HOME": str(svc.home)}
    if svc.role == "agent":
        env[LOG_FILE_ENV] = str(log_dir / "agent.log")
    if svc.token_file is not None:
        env[TOKEN_FILE_ENV] = str(svc.token_file)  # the file, 0600 and the user's, not the token
    job: dict[str, object] = {"Label": svc.label, "ProgramArguments": list(svc.argv)}
    if svc.system:
        job["UserName"] = svc.user  # a LaunchDaemon runs as root unless told otherwise
    job |= {
        "EnvironmentVariables": env,
        "WorkingDirectory": str(svc.home),
        "RunAtLoad": True,
        "KeepAlive": {"SuccessfulExit": False},  # back after a crash, not after a clean stop
        "ThrottleInterval": THROTTLE_S,
        "ExitTimeOut": STOP_TIMEOUT_S[svc.role],
        "ProcessType": "Interactive",  # not throttled as a background job: it serves people
        # Only what escapes the log (the listening line, a crash's traceback) lands here: the
        # agent logs to a rotating file (METERLESS_LOG_FILE) and launchd rotates nothing.
        "StandardOutPath": str(log_dir / f"{svc.role}.out"),
        "StandardErrorPath": str(log_dir / f"{svc.role}.err"),
    }
    return plistlib.dumps(job, sort_keys=False)


LAUNCHD_REQUIRED = ("Label", "ProgramArguments")  # launchd.plist(5): a job needs these
