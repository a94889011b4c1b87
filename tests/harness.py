"""Real processes for integration tests: node agents and `cluster up`, started and stopped, the
CLI run against them, and streaming load as clients send it."""

from __future__ import annotations

import contextlib
import json
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from cluster.cli.ports import free_port


class ProcessExited(RuntimeError):
    """A process a test waits on has exited."""


def wait_for(predicate, timeout: float, what: str, interval: float = 0.1):  # type: ignore[no-untyped-def]
    """Poll `predicate` until it returns something truthy; fail the test with `what` otherwise."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if value := predicate():
                return value
        except ProcessExited:
            raise  # nothing will come of waiting for a process that is gone
        except Exception:  # not ready yet: try again
            pass
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


def share_models(data_dir: Path, models_dir: Path) -> Path:
    """A fresh agent data dir whose generated models are shared with other agents."""
    data_dir.mkdir(parents=True, exist_ok=True)
    link = data_dir / "models"
    if not link.exists():
        link.symlink_to(models_dir, target_is_directory=True)
    return data_dir


@dataclass
class AgentProcess:
    """One `node-agent` subprocess on loopback."""

    data_dir: Path
    name: str
    args: Sequence[str] = ()
    env: dict[str, str] = field(default_factory=dict)
    port: int = 0
    proc: subprocess.Popen[bytes] | None = None
    # Given by environment, as an operator would; "": a plaintext agent.
    join_token: str = field(default="", repr=False)

    @property
    def log_path(self) -> Path:
        """Where its stdout and stderr go."""
        return self.data_dir / f"{self.name}.log"

    @property
    def address(self) -> str:
        """host:port of its gRPC server."""
        return f"127.0.0.1:{self.port}"

    def start(self, timeout: float = 120.0) -> AgentProcess:
        """Start it (on the same port as before, if it ran already) and wait until it listens."""
        self.port = self.port or free_port()
        cmd = [
            sys.executable,
            "-m",
            "node_agent",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--data-dir",
            str(self.data_dir),
            "--name",
            self.name,
            *self.args,
        ]
        log = open(self.log_path, "ab")
        token = {"METERLESS_JOIN_TOKEN": self.join_token} if self.join_token else {}
        self.proc = subprocess.Popen(
            cmd, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **token, **self.env}
        )
        wait_for(self._listening, timeout, f"agent {self.name} to listen on {self.port}")
        return self

    def _listening(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise ProcessExited(f"agent {self.name} exited with {self.proc.returncode}")
        with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
            return True

    def kill(self) -> None:
        """SIGKILL: the node vanishes without saying goodbye."""
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def stop(self) -> None:
        """SIGTERM and wait; SIGKILL if it does not stop in time."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.kill()


@dataclass
class ClusterProcess:
    """One `cluster up` subprocess; its endpoint is http://127.0.0.1:<port>.

    Its config dir (admin token, cluster secret) is `<data_dir>/config`. Unless `keys_required`,
    it runs with `--insecure`: tests of routing and the ledger send no API key. Unless told
    otherwise it also admits agents without a join token, as most tests start them.
    """

    data_dir: Path
    args: Sequence[str] = ()
    port: int = 0
    proc: subprocess.Popen[bytes] | None = None
    keys_required: bool = False
    extra_env: dict[str, str] = field(default_factory=dict)
    # Admit agents started without a join token, as before the cluster secret existed.
    plaintext_agents: bool = True
    tls: bool = False  # started with --tls self-signed: its URL is https, trusted by its file

    def join_token(self) -> str:
        """`cluster join-token` for this cluster (creating its secret), before or after start."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        out = subprocess.run(
            [sys.executable, "-m", "cluster.cli", "join-token"],
            env=self.env,
            capture_output=True,
            check=True,
            timeout=60,
        )
        return out.stdout.decode().strip()

    @property
    def url(self) -> str:
        """The endpoint's base URL."""
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}"

    @property
    def verify(self) -> str | bool:
        """What a client verifies the endpoint with: its self-signed certificate, if it has one."""
        return str(self.config_dir / "tls-cert.pem") if self.tls else True

    @property
    def config_dir(self) -> Path:
        """Its own config dir (admin token, cluster secret), never the user's."""
        return self.data_dir / "config"

    @property
    def env(self) -> dict[str, str]:
        """The environment of `cluster` commands run against it (they find the admin token)."""
        return {
            **os.environ,
            "METERLESS_DATA_DIR": str(self.data_dir),
            "METERLESS_CONFIG_DIR": str(self.config_dir),
            **self.extra_env,
        }

    @property
    def admin_headers(self) -> dict[str, str]:
        """What an admin API call sends: the admin token `cluster up` made."""
        token = (self.config_dir / "admin-token").read_text().strip()
        return {"authorization": f"Bearer {token}"}

    def start(self, timeout: float = 180.0, want_models: int = 1) -> ClusterProcess:
        """Start it and wait until it lists at least `want_models` models."""
        self.port = self.port or free_port()
        plaintext: tuple[str, ...] = ("--allow-plaintext-agents",) if self.plaintext_agents else ()
        plaintext += ("--tls", "self-signed") if self.tls else ()
        cmd = [
            sys.executable,
            "-m",
            "cluster.cli",
            "up",
            "--port",
            str(self.port),
            *plaintext,
            *self.args,
        ]
        if not self.keys_required:
            cmd.append("--insecure")
        log = open(self.data_dir / "cluster.log", "ab")
        self.proc = subprocess.Popen(
            cmd, stdout=log, stderr=subprocess.STDOUT, env=self.env, start_new_session=True
        )
        wait_for(
            lambda: self._models() >= want_models,
            timeout,
            "the endpoint to serve a model",
            interval=0.5,
        )
        return self

    def _models(self) -> int:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise ProcessExited(
                f"cluster up exited with {self.proc.returncode}; see "
                f"{self.data_dir / 'cluster.log'}"
            )
        r = httpx.get(f"{self.url}/health", timeout=2, verify=self.verify)  # open to all
        return len(r.json()["models"]) if r.status_code == 200 else 0

    def nodes(self) -> list[dict]:  # type: ignore[type-arg]
        """The admin API's node list."""
        r = httpx.get(f"{self.url}/admin/nodes", headers=self.admin_headers, timeout=10)
        return r.json()["nodes"]  # type: ignore[no-any-return]

    def stop(self) -> None:
        """SIGTERM (as Ctrl-C would) and wait for a clean stop."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


def ensure_loopback_multicast() -> bool:
    """Whether `lo` carries multicast (needed for mDNS on loopback), switching it on as root."""
    flags = Path("/sys/class/net/lo/flags")
    if not flags.exists():  # not Linux: loopback multicast works out of the box on macOS
        return True
    if int(flags.read_text(), 16) & 0x1000:  # IFF_MULTICAST
        return True
    if os.geteuid() != 0:
        return False
    subprocess.run(["ip", "link", "set", "lo", "multicast", "on"], check=True)
    return True


@contextlib.contextmanager
def keyed_cluster(root: Path, models: Path, ray_prefix: str) -> Iterator[ClusterProcess]:
    """A cluster that requires API keys (loopback without --demo), one agent serving `demo` as
    its static peer, and Ray's files under a directory of its own (short: Ray's socket paths are
    limited) that a test can search; everything is stopped and removed on the way out."""
    agent = AgentProcess(
        share_models(root / "agent", models), name="agent0", args=("--model", "demo", "--no-mdns")
    )
    ray_dir = tempfile.mkdtemp(prefix=ray_prefix, dir="/tmp")
    head = ClusterProcess(root / "head", keys_required=True, extra_env={"RAY_TMPDIR": ray_dir})
    head.data_dir.mkdir()
    try:
        agent.start()
        head.args = ("--no-local-agent", "--no-mdns", "--peer", agent.address)
        head.start()
        wait_for(lambda: [n["state"] for n in head.nodes()] == ["ready"], 30, "the node ready")
        yield head
    finally:
        head.stop()
        agent.stop()
        shutil.rmtree(ray_dir, ignore_errors=True)


@contextlib.contextmanager
def peered_office(
    cluster: ClusterProcess,
    agents: Sequence[AgentProcess],
    *,
    ready_timeout: float = 30.0,
    want_models: int = 1,
    extra_args: Sequence[str] = (),
) -> Iterator[tuple[ClusterProcess, list[AgentProcess]]]:
    """Start `agents`, then `cluster` knowing them as static peers (no mDNS, no local agent)
    with `extra_args`, and wait until every node is ready; everything is stopped on the way
    out."""
    try:
        for agent in agents:
            agent.start()
        peers = [arg for a in agents for arg in ("--peer", a.address)]
        cluster.args = ("--no-local-agent", "--no-mdns", *extra_args, *peers)
        cluster.start(want_models=want_models)
        wait_for(
            lambda: sum(n["state"] == "ready" for n in cluster.nodes()) == len(agents),
            ready_timeout,
            f"{len(agents)} nodes ready",
        )
        yield cluster, list(agents)
    finally:
        cluster.stop()
        for agent in agents:
            agent.stop()


def leave_mid_stream(cluster: ClusterProcess) -> float:
    """Start a long streamed completion, read a few events, hang up, and wait until the nodes
    report nothing running; returns the seconds from hanging up to then (at most 5)."""
    body = {
        "model": "demo",
        "prompt": "A very long story:",
        "max_tokens": 1500,
        "temperature": 0,
        "stream": True,
    }

    def busy() -> int:
        return sum(n["running"] + n["waiting"] for n in cluster.nodes())

    with httpx.stream("POST", f"{cluster.url}/v1/completions", json=body, timeout=60) as r:
        assert r.status_code == 200
        lines = r.iter_lines()
        for _ in range(3):
            next(lines)
        wait_for(busy, 5, "the node to report the running generation")
    closed = time.monotonic()  # leaving the block closes the connection mid-stream
    wait_for(lambda: busy() == 0, 5, "the node to free the slot")
    return time.monotonic() - closed


# -- the CLI and deployed models -------------------------------------------------------------


def cli(cluster: ClusterProcess, *args: str) -> subprocess.CompletedProcess[str]:
    """Run `cluster ARGS --url <endpoint>`, on a terminal wide enough for whole table rows."""
    return subprocess.run(
        [sys.executable, "-m", "cluster.cli", *args, "--url", cluster.url],
        capture_output=True,
        text=True,
        timeout=300,
        env={**cluster.env, "COLUMNS": "400"},
    )


def head_cli(cluster: ClusterProcess, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """Run `cluster ARGS` on the head itself (`providers`, `route`: its config dir, no --url),
    with `env` added to its environment."""
    return subprocess.run(
        [sys.executable, "-m", "cluster.cli", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**cluster.env, **env},
    )


def admin_get(cluster: ClusterProcess, path: str) -> Any:
    """The admin API's JSON answer at `path`, which must be a 200."""
    r = httpx.get(f"{cluster.url}{path}", headers=cluster.admin_headers, timeout=10)
    assert r.status_code == 200, r.text
    return r.json()


def loads(agent: AgentProcess, model: str = "demo") -> int:
    """How many times the agent's engine has loaded `model`, from its log."""
    return (agent.data_dir / f"{agent.name}.log").read_text().count(f": loaded {model} from /")


def deployed(cluster: ClusterProcess, model: str = "demo") -> dict[str, Any]:
    """The /admin/models entry of a deployed model."""
    models = httpx.get(
        f"{cluster.url}/admin/models", headers=cluster.admin_headers, timeout=10
    ).json()["models"]
    return next(m for m in models if m["model"] == model)


def holders(cluster: ClusterProcess, model: str = "demo") -> list[str]:
    """Names of the nodes where the model is ready, sorted."""
    return sorted(r["node"] for r in deployed(cluster, model)["replicas"] if r["state"] == "ready")


# -- streaming load ----------------------------------------------------------------------------


@dataclass
class Outcome:
    """What one client saw of one streamed request."""

    node: str = ""
    status: int = 0
    tokens_seen: int = 0
    done: bool = False
    error_event: bool = False
    exception: str = ""
    usage: dict | None = None  # type: ignore[type-arg]


def stream_once(url: str, i: int) -> Outcome:
    """One streamed chat completion, read as a client would."""
    out = Outcome()
    body = {
        "model": "demo",
        "max_tokens": 40,
        "stream": True,
        "seed": i,
        "stream_options": {"include_usage": True},
        "messages": [{"role": "user", "content": f"Tell me about request {i}."}],
    }
    try:
        with httpx.stream("POST", f"{url}/v1/chat/completions", json=body, timeout=60) as r:
            out.status, out.node = r.status_code, r.headers.get("x-meterless-node", "")
            for line in r.iter_lines():
                if line == "data: [DONE]":
                    out.done = True
                elif line.startswith("data: "):
                    payload = json.loads(line[6:])
                    out.error_event |= "error" in payload
                    out.tokens_seen += bool(payload.get("choices"))
                    out.usage = payload.get("usage") or out.usage
    except httpx.HTTPError as exc:
        out.exception = repr(exc)
    return out


def load(
    url: str, stop: threading.Event, results: list[Outcome], workers: int = 6
) -> list[threading.Thread]:
    """Continuous streaming load from `workers` clients until `stop` is set."""

    def work(w: int) -> None:
        i = 0
        while not stop.is_set():
            results.append(stream_once(url, w * 10_000 + i))
            i += 1

    threads = [threading.Thread(target=work, args=(w,), daemon=True) for w in range(workers)]
    for t in threads:
        t.start()
    return threads


def cluster_of(root: Path, *members: AgentProcess) -> ClusterProcess:
    """A cluster whose nodes are exactly `members` (as --peer), ready."""
    cluster = ClusterProcess(root / "head")
    cluster.data_dir.mkdir()
    cluster.args = (
        "--no-local-agent",
        "--no-mdns",
        *(x for a in members for x in ("--peer", a.address)),
    )
    try:
        cluster.start()
        wait_for(
            lambda: sum(n["state"] == "ready" for n in cluster.nodes()) == len(members),
            60,
            "every node ready",
        )
    except BaseException:
        cluster.stop()  # a head that never got ready must not outlive the test
        raise
    return cluster


# -- slow clients ------------------------------------------------------------------------------


def trickle_headers(port: int, give_up_s: float) -> tuple[float, bytes]:
    """Send a request's headers to 127.0.0.1:`port` one byte a second until the server answers
    or closes; the seconds that took and what it answered (b"" for a bare close), or
    (`give_up_s`, b"") if the connection was still open then."""
    head = b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
    start = time.monotonic()
    with socket.create_connection(("127.0.0.1", port)) as sock:
        for byte in head * 10:
            if select.select([sock], [], [], 1.0)[0]:
                return time.monotonic() - start, sock.recv(65536)
            if time.monotonic() - start > give_up_s:
                break
            try:
                sock.sendall(bytes([byte]))
            except OSError:  # reset: closed without an answer
                return time.monotonic() - start, b""
    return give_up_s, b""
