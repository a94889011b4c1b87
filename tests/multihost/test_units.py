"""The systemd units under deploy/ are real: their commands, run as the units would run them on two
hosts of the office, make a cluster that admits the node and serves a request.

"As the unit would": the unit's `User=` (created from deploy/'s sysusers file when missing, and
removed after), only the unit's `Environment=` lines, its state directory owned by that user, the
join token in a root-only file handed over as systemd's LoadCredential= does (a private copy the
user can read, named by %d), no new privileges, and a private /tmp. What differs from systemd is
where things are: the state directory and credentials live under a scratch folder, and the
unit's /opt/meterless/bin is this checkout's virtual environment.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from node_agent.install.layout import DEFAULT_PREFIX, STATE_DIR, SYSTEM_TOKEN_FILE
from scripts.gen_deploy import DEPLOY
from tests.multihost.netns import REPO, Host
from tests.multihost.office import Bed

pytestmark = [pytest.mark.multihost, pytest.mark.timeout(600)]


@dataclass(frozen=True)
class Unit:
    """What a unit file says about how to run its service."""

    user: str
    argv: list[str]
    environment: dict[str, str]
    credentials: dict[str, Path]  # LoadCredential= name -> file

    @classmethod
    def read(cls, path: Path) -> Unit:
        """The unit's User=, ExecStart=, Environment= and LoadCredential= lines."""
        user, argv, env, creds = "", [], {}, {}
        for line in path.read_text().splitlines():
            key, _, value = line.partition("=")
            if key == "User":
                user = value
            elif key == "ExecStart":
                argv = value.split()  # deploy/'s units quote nothing
            elif key == "Environment":
                name, _, text = value.partition("=")
                env[name] = text
            elif key == "LoadCredential":
                name, _, file = value.partition(":")
                creds[name] = Path(file)
        return cls(user, argv, env, creds)


@contextlib.contextmanager
def service_user(name: str) -> Iterator[pwd.struct_passwd]:
    """The unit's user: created by systemd-sysusers from deploy/'s file if missing, then removed."""
    created = False
    try:
        pwd.getpwnam(name)
    except KeyError:
        tool = shutil.which("systemd-sysusers")
        if tool is None:
            pytest.skip("systemd-sysusers is missing (`make test` installs the systemd package)")
        subprocess.run([tool, str(DEPLOY / "systemd" / "meterless.sysusers.conf")], check=True)
        created = True
    try:
        yield pwd.getpwnam(name)
    finally:
        if created:
            subprocess.run(["userdel", name], check=False)


# PrivateTmp=; and where this machine's Python lives in a home directory (0700), that one folder
# shown to the unit's user at the same path, as an install in /opt/meterless would be.
_SANDBOX = """
mount -t tmpfs -o mode=1777 tmpfs /tmp || exit 1
if [ "$1" != - ]; then
  mkdir /tmp/.py && mount --bind "$2" /tmp/.py && mount -t tmpfs -o mode=0755 tmpfs "$1" &&
    mkdir -p "$2" && mount --bind /tmp/.py "$2" && umount -l /tmp/.py && rmdir /tmp/.py || exit 1
fi
shift 2
exec "$@"
"""


def _python_home() -> tuple[str, str]:
    """The home directory the interpreter is installed in, and the installation; else "-"s."""
    prefix = Path(sys.base_prefix).resolve()
    for home in (Path("/root"), *Path("/home").glob("*")):
        if prefix.is_relative_to(home):
            return str(home), str(prefix)
    return "-", "-"


class Service:
    """One unit's command, started on a host as the unit would start it."""

    def __init__(self, unit: Unit, host: Host, state: Path, user: pwd.struct_passwd) -> None:
        self.unit, self.host, self.state, self.user = unit, host, state, user
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = state.parent / f"{host.name}.log"

    def start(self, credentials: dict[str, str]) -> Service:
        """Lay out the state directory and credentials, then run ExecStart= as User=."""
        creds = self.state.parent / f"{self.host.name}-credentials"
        creds.mkdir(mode=0o700)
        for name, text in credentials.items():
            (creds / name).write_text(text)
            (creds / name).chmod(0o400)
        for path in (self.state, creds, *creds.iterdir()):
            os.chown(path, self.user.pw_uid, self.user.pw_gid)
        env = {
            k: v.replace("%d", str(creds)).replace(str(STATE_DIR), str(self.state))
            for k, v in self.unit.environment.items()
        }
        env["PATH"] = "/usr/bin:/bin"
        argv = [
            a.replace(str(DEFAULT_PREFIX), str(Path(sys.executable).parent)) for a in self.unit.argv
        ]
        cmd = self.host.cmd(
            "unshare", "--mount", "--propagation", "private", "sh", "-c", _SANDBOX, "sh",
            *_python_home(), "setpriv", "--init-groups", "--no-new-privs",
            f"--reuid={self.user.pw_uid}", f"--regid={self.user.pw_gid}",
            "env", "-i", *(f"{k}={v}" for k, v in env.items()), *argv,
        )  # fmt: skip
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                cmd, stdout=log, stderr=subprocess.STDOUT, cwd=self.state, start_new_session=True
            )
        return self

    def running(self) -> bool:
        """Still running; an AssertionError with its log if it exited."""
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(f"{self.unit.argv} exited: {self.log.read_text()[-3000:]}")
        return True

    def stop(self) -> None:
        """SIGTERM, as systemd's KillMode=mixed sends it; then whatever is left on the host."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=120)
        for pid in self.host.pids():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, 9)
        if self.proc is not None:
            self.proc.wait()


def until(check: Callable[[], object], timeout: float, what: str, *services: Service) -> None:
    """Poll `check`; fail at once, with its log, when a service exits."""
    deadline = time.monotonic() + timeout
    while True:
        for service in services:
            service.running()
        with contextlib.suppress(Exception):
            if check():
                return
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(1)


def test_the_units_commands_make_a_cluster_that_serves(bed: Bed, demo_model_dir: Path) -> None:
    head_unit = Unit.read(DEPLOY / "systemd" / "meterless-head.service")
    agent_unit = Unit.read(DEPLOY / "systemd" / "meterless-agent.service")
    assert head_unit.user == agent_unit.user
    assert agent_unit.credentials == {"join-token": SYSTEM_TOKEN_FILE}
    # What `node-agent service install --model demo --name unit-agent` adds to the unit.
    agent_unit.environment.update(METERLESS_MODELS="demo", METERLESS_NAME="unit-agent")
    with contextlib.ExitStack() as stack:  # unwound in reverse: services, the user, the scratch
        scratch = Path(tempfile.mkdtemp(prefix="meterless-units-", dir="/var/tmp"))
        stack.callback(shutil.rmtree, scratch, ignore_errors=True)
        scratch.chmod(0o755)
        user = stack.enter_context(service_user(head_unit.user))
        head_state, agent_state = scratch / "head-state", scratch / "agent-state"
        head_state.mkdir(mode=0o750)
        agent_state.mkdir(mode=0o750)
        shutil.copytree(demo_model_dir.parent, agent_state / "models")  # /tmp is private
        subprocess.run(["chown", "-R", f"{user.pw_uid}:{user.pw_gid}", str(agent_state)])
        head = Service(head_unit, bed.net.add_host("uhead"), head_state, user)
        agent = Service(agent_unit, bed.net.add_host("uagent"), agent_state, user)
        stack.callback(head.stop)
        stack.callback(agent.stop)
        head.start({})
        config = head_state / "config"
        until((config / "admin-token").exists, 120, "the head's admin token", head)
        token = subprocess.run(
            [sys.executable, "-m", "cluster.cli", "join-token"],
            env={**os.environ, "METERLESS_CONFIG_DIR": str(config)},
            cwd=REPO, capture_output=True, text=True, check=True,
        ).stdout.strip()  # fmt: skip
        agent.start({"join-token": token})
        url = f"http://{head.host.address}:8000"
        admin = {"authorization": f"Bearer {(config / 'admin-token').read_text().strip()}"}
        client = stack.enter_context(httpx.Client(timeout=30, headers=admin))

        def node_ready() -> bool:
            nodes = client.get(f"{url}/admin/nodes").json()["nodes"]
            return any(
                (n["name"], n["state"]) == ("unit-agent", "ready") and "demo" in n["models"]
                for n in nodes
            )

        until(node_ready, 300, "the unit's agent ready on the unit's head", head, agent)
        key = client.post(f"{url}/admin/keys", json={"name": "units"}).json()["key"]
        r = httpx.post(
            f"{url}/v1/chat/completions",
            headers={"authorization": f"Bearer {key}"},
            json={"model": "demo", "messages": [{"role": "user", "content": "hi"}],
                  "max_tokens": 8, "temperature": 0},
            timeout=60,
        )  # fmt: skip
        assert r.status_code == 200, r.text
        assert r.json()["usage"]["completion_tokens"] > 0
        assert token not in (scratch / "uagent.log").read_text()
        assert (config / "cluster-secret").stat().st_uid == user.pw_uid  # ran as User=
