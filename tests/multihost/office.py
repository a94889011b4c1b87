"""meterless on an office of namespaces: a head (`cluster up`) on one host, agents on the others.

Every process runs inside its host (`ip netns exec`), listens on the host's own address at the
ports a real office would use, and finds the others over the LAN, mDNS included. The test process
sits in the root namespace, on the LAN, as a laptop would.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx

from node_agent.trust import ClusterSecret, decode_token
from tests.multihost.netns import REPO, Host, Office

AGENT_PORT = 50151
HTTP_PORT = 8000
T = TypeVar("T")


def wait_for(predicate: Callable[[], T], timeout: float, what: str, interval: float = 0.1) -> T:
    """Poll `predicate` until it returns something truthy; AssertionError naming `what` if not."""
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(Exception):
            if value := predicate():
                return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


@dataclass
class Agent:
    """A `node-agent` on one host, serving `demo` on the agents' usual port."""

    host: Host
    data_dir: Path
    args: Sequence[str] = ()
    proc: subprocess.Popen[bytes] | None = None
    listening_at: float = 0.0  # monotonic: when its port first answered
    join_token: str = field(default="", repr=False)  # "": a plaintext agent

    @property
    def name(self) -> str:
        """Its node name (the host's name)."""
        return self.host.name

    @property
    def address(self) -> str:
        """host:port of its gRPC server on the office LAN."""
        return f"{self.host.address}:{AGENT_PORT}"

    def start(self) -> Agent:
        """Start it; `wait_listening` waits for its port."""
        flags = f"--host 0.0.0.0 --port {AGENT_PORT} --name {self.name} --model demo".split()
        if not self.join_token:  # a plaintext agent must say so to listen beyond loopback
            flags.append("--insecure")
        cmd = self.host.cmd(
            sys.executable, "-m", "node_agent", *flags, "--data-dir", str(self.data_dir), *self.args
        )
        token = {"METERLESS_JOIN_TOKEN": self.join_token} if self.join_token else {}
        with open(self.data_dir / "agent.log", "ab") as log:
            self.proc = subprocess.Popen(
                cmd, stdout=log, stderr=subprocess.STDOUT, cwd=REPO, env={**os.environ, **token}
            )
        self.listening_at = 0.0
        return self

    def wait_listening(self, timeout: float = 120.0) -> float:
        """Wait until its port answers on the LAN; when it did (monotonic)."""
        wait_for(self._listening, timeout, f"agent {self.name} to listen")
        self.listening_at = self.listening_at or time.monotonic()
        return self.listening_at

    def _listening(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise RuntimeError(f"agent {self.name} exited with {self.proc.returncode}")
        with socket.create_connection((self.host.address, AGENT_PORT), timeout=0.5):
            return True

    def kill(self) -> None:
        """SIGKILL: the node vanishes without a goodbye."""
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def stop(self) -> None:
        """SIGTERM and wait (a clean stop says goodbye over mDNS); SIGKILL if it hangs."""
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.kill()

    def log(self) -> str:
        """Everything it logged so far."""
        return (self.data_dir / "agent.log").read_text(errors="replace")


@dataclass
class Head:
    """`cluster up` on one host: Ray, the Serve app, the endpoint on the host's address."""

    host: Host
    data_dir: Path
    args: Sequence[str] = ()
    proc: subprocess.Popen[bytes] | None = None
    client: httpx.Client = field(default_factory=lambda: httpx.Client(timeout=10))
    plaintext_agents: bool = True  # admit agents without the join token (as before it existed)

    @property
    def config_dir(self) -> Path:
        """Its own config dir, where its cluster secret lives."""
        return self.data_dir / "config"

    def join_token(self) -> str:
        """`cluster join-token` for this head (creating its secret), before or after start."""
        env = {**os.environ, "METERLESS_CONFIG_DIR": str(self.config_dir)}
        out = subprocess.run(
            [sys.executable, "-m", "cluster.cli", "join-token"],
            env=env,
            cwd=REPO,
            capture_output=True,
            check=True,
            timeout=60,
        )
        return out.stdout.decode().strip()

    @property
    def url(self) -> str:
        """The endpoint, as clients on the LAN reach it."""
        return f"http://{self.host.address}:{HTTP_PORT}"

    def start(self) -> Head:
        """Start it; `wait_up` waits for the endpoint."""
        # --insecure: the office's clients send no API key (keys are tested on loopback).
        flags = f"--host 0.0.0.0 --port {HTTP_PORT} --no-local-agent --insecure"
        if self.plaintext_agents:
            flags += " --allow-plaintext-agents"
        cmd = self.host.cmd(
            "env",
            f"METERLESS_DATA_DIR={self.data_dir}",
            f"METERLESS_CONFIG_DIR={self.config_dir}",
            sys.executable,
            "-m",
            "cluster.cli",
            "up",
            *flags.split(),
            "--mdns-interface",
            self.host.address,
            *self.args,
        )
        with open(self.data_dir / "cluster.log", "ab") as log:
            self.proc = subprocess.Popen(
                cmd, stdout=log, stderr=subprocess.STDOUT, cwd=REPO, start_new_session=True
            )
        return self

    def wait_up(self, timeout: float = 240.0) -> None:
        """Wait until the endpoint answers; if it exits or times out, say what it was doing."""
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        while not self._up():
            if self.proc.poll() is not None:
                raise AssertionError(
                    f"cluster up exited with {self.proc.returncode}\n{self.diagnosis()}"
                )
            if time.monotonic() >= deadline:
                raise AssertionError(
                    f"timed out after {timeout:.0f}s waiting for the endpoint "
                    f"to answer\n{self.diagnosis()}"
                )
            time.sleep(0.5)

    def diagnosis(self) -> str:
        """The end of `cluster up`'s log, the host's listening sockets, Serve's complaints."""
        parts = [
            "--- cluster.log (end)",
            *self.log().splitlines()[-25:],
            "--- listening",
            self.host.run("ss", "-ltnp", check=False),
        ]
        serve_logs = Path("/tmp/ray/session_latest/logs/serve")
        for path in sorted(serve_logs.glob("*.log")) if serve_logs.is_dir() else ():
            lines = path.read_text(errors="replace").splitlines()
            bad = [line for line in lines if " ERROR " in line or " WARNING " in line]
            if bad:
                parts += [f"--- {path.name}", *bad[-10:]]
        return "\n".join(parts)

    def _up(self) -> bool:
        try:
            token = (self.data_dir / "config" / "admin-token").read_text().strip()
            self.client.headers["authorization"] = f"Bearer {token}"  # for the admin API
            return self.client.get(f"{self.url}/health", timeout=2).status_code == 200
        except (OSError, httpx.HTTPError):
            return False

    def log(self) -> str:
        """Everything `cluster up` printed so far, over all its starts."""
        return (self.data_dir / "cluster.log").read_text(errors="replace")

    def get(self, path: str, **params: str) -> Any:
        """GET an admin or OpenAI path; the JSON answer."""
        r = self.client.get(f"{self.url}{path}", params=params)
        r.raise_for_status()
        return r.json()

    def nodes(self) -> dict[str, dict[str, Any]]:
        """The admin API's nodes, by name."""
        return {n["name"]: n for n in self.get("/admin/nodes")["nodes"]}

    def sessions(self) -> list[dict[str, Any]]:
        """Where the controller reached each node, and what failed on the other addresses."""
        return self.get("/admin/nodes")["sessions"]  # type: ignore[no-any-return]

    def state(self, name: str) -> str:
        """The state of the node called `name` ("" while unknown)."""
        return self.nodes().get(name, {}).get("state", "")

    def usage(self) -> dict[str, dict[str, Any]]:
        """The ledger's all-time usage per node id (`cluster usage --by node --json`)."""
        groups = self.get("/admin/usage", since="all", by="node")["groups"]
        return {g["node"]: g for g in groups}

    def kill(self) -> None:
        """SIGKILL `cluster up` and every process of its Ray: the controller dies mid-work.

        Ray starts workers all the time, and one forked between listing and killing would outlive
        the head, so this sweeps until the host has no process left.
        """
        deadline = time.monotonic() + 30
        while (pids := self.host.pids()) and time.monotonic() < deadline:
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.2)
        if self.proc is not None:
            self.proc.wait()

    def stop(self) -> None:
        """SIGTERM (as Ctrl-C) and wait; whatever is left on the host is killed."""
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=60)
        self.kill()

    def pid_of(self, marker: str) -> int:
        """The pid of the head's process whose command line contains `marker` (a Ray actor)."""
        for pid in self.host.pids():
            with contextlib.suppress(OSError):
                if marker in Path(f"/proc/{pid}/cmdline").read_text(errors="replace"):
                    return pid
        raise LookupError(f"no process matching {marker!r} on {self.host.name}")


MDNS_AGENTS = ("a1", "a2", "a3")


@dataclass
class Bed:
    """The running office and what was measured while it came up."""

    net: Office
    head: Head
    agents: dict[str, Agent]
    ready_after_s: dict[str, float] = field(default_factory=dict)  # from listening to ready
    token: str = field(default="", repr=False)  # the office's join token; every agent has it

    @property
    def secret(self) -> ClusterSecret:
        """The office's cluster secret, as its agents hold it."""
        return decode_token(self.token)
