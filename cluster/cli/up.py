"""`cluster up`: start or join Ray, run the Serve app, start a local agent, stay in the foreground.

Stops everything it started, and nothing else, on Ctrl-C, SIGTERM or `cluster down`.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import secrets
import signal
import ssl
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from cluster.access import admin_token, ray_auth, secret_store, tls
from cluster.access.exposure import decide
from cluster.access.keys import digest
from cluster.cli.ports import free_port, port_state
from cluster.cli.tables import visible
from cluster.paths import config_dir, data_dir, private_dir, write_private
from node_agent.trust import ClusterSecret, encode_token

logger = logging.getLogger(__name__)

STATE_FILE = "cluster-up.json"
JOIN_TOKEN_ENV = "METERLESS_JOIN_TOKEN"
LEDGER_FLUSH_S = 10.0  # how long a clean stop waits for in-flight requests' usage rows
PORT_LINGER_S = 90.0  # TCP's TIME_WAIT (60 s on Linux), with room to spare


@dataclass(frozen=True, kw_only=True)
class UpOptions:
    """What `cluster up` was asked to do."""

    host: str = "127.0.0.1"
    port: int = 8000
    demo: bool = False
    local_agent: bool = True
    peers: tuple[str, ...] = ()
    ray_address: str | None = None
    routing: str = "fastest"
    gateway_replicas: int = 1
    mdns: bool = True
    mdns_interfaces: tuple[str, ...] = ()
    agent_port: int = 0
    ready_timeout_s: float = 180.0
    ledger: bool = True
    affinity: bool = True
    insecure: bool = False  # serve without API keys on any address (warned at every start)
    plaintext_agents: bool = False  # also admit agents without the join token (insecure)
    tls_cert: str | None = None  # serve HTTPS with the operator's certificate and key
    tls_key: str | None = None
    tls_self_signed: bool = False  # serve HTTPS with a certificate made once in the config dir
    max_body_mib: float = 8.0  # the largest request body the endpoint reads
    local_only: bool = False  # no request goes to a provider, whatever its key
    idle_timeout_s: float = 120.0  # between a stream's events once the first token came


def start_local_agent(
    opts: UpOptions, data: Path, secret: ClusterSecret | None = None
) -> tuple[subprocess.Popen[bytes], str]:
    """Start this machine's node agent (with the join token); its process and gRPC address."""
    port = opts.agent_port or free_port()
    host = "127.0.0.1" if opts.demo else "0.0.0.0"
    cmd = [
        sys.executable,
        "-m",
        "node_agent",
        "--host",
        host,
        "--port",
        str(port),
        "--data-dir",
        str(data),
    ]
    if opts.demo:
        cmd += ["--model", "demo", "--no-mdns"]
    # The token goes by environment, not argv: other users can list argv, not the environment.
    env = {**os.environ, **({JOIN_TOKEN_ENV: encode_token(secret)} if secret else {})}
    proc = subprocess.Popen(cmd, start_new_session=True, env=env)
    return proc, f"127.0.0.1:{port}"


def cluster_secret(opts: UpOptions) -> ClusterSecret:
    """The cluster secret (created on the first `cluster up`), announced without revealing it."""
    secret, created = secret_store.load_or_create(config_dir())
    where = config_dir() / secret_store.FILE_NAME
    print(
        f"cluster {secret.fingerprint}: {'created' if created else 'secret in'} {where}; "
        "agents join with `node-agent --join-token TOKEN` (TOKEN: `cluster join-token`)",
        flush=True,
    )
    if opts.plaintext_agents:
        print(
            "WARNING: --allow-plaintext-agents: agents without the join token are admitted; "
            "their traffic, prompts included, is readable and forgeable on the network",
            file=sys.stderr,
            flush=True,
        )
    return secret


def direct_ingress(opts: UpOptions) -> bool:
    """Whether the gateway replica itself listens on the endpoint's port (Serve's direct ingress).

    Serve's HTTP proxy is one more process on every request and every streamed chunk: on a small
    head it costs more CPU per request than the gateway itself. With one gateway replica on a
    Ray that `cluster up` starts, nothing needs the proxy in front; the proxy keeps running, on a
    spare port. Several replicas cannot share one port, and a Ray that is joined is configured by
    whoever started it, so both keep the proxy; so does RAY_SERVE_ENABLE_DIRECT_INGRESS=0.
    """
    wanted = os.environ.get("RAY_SERVE_ENABLE_DIRECT_INGRESS", "1") != "0"
    return wanted and opts.gateway_replicas == 1 and not opts.ray_address and opts.port > 0


def _proxy_port(opts: UpOptions) -> int:
    """Where Serve's own HTTP proxy listens: the endpoint, or a spare port under direct ingress."""
    if not direct_ingress(opts):
        return opts.port
    return free_port("127.0.0.1" if opts.host in ("0.0.0.0", "::") else opts.host)


def _start_ray(opts: UpOptions) -> bool:
    """Connect to or start Ray; True when this process started the cluster."""
    from cluster.gateway.header_deadline import CALLBACK

    os.environ.setdefault("RAY_SERVE_THROUGHPUT_OPTIMIZED", "1")
    # Read where Serve answers HTTP (its proxy, or the replica), before its server starts.
    os.environ.setdefault("RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH", CALLBACK)
    if direct_ingress(opts):  # read by Serve's controller and replicas, which inherit them
        os.environ.update(
            {
                "RAY_SERVE_ENABLE_DIRECT_INGRESS": "1",
                "RAY_SERVE_DIRECT_INGRESS_MIN_HTTP_PORT": str(opts.port),
                "RAY_SERVE_DIRECT_INGRESS_MAX_HTTP_PORT": str(opts.port + 1),
            }
        )
    import ray

    if opts.ray_address:
        ray.init(address=opts.ray_address, log_to_driver=False)
        return False
    ray.init(include_dashboard=False, log_to_driver=False, configure_logging=False)
    return True


def _run_app(
    opts: UpOptions,
    peers: tuple[str, ...],
    token: str,
    admin_digest: str,
    secret: ClusterSecret | None = None,
    endpoint_tls: tls.EndpointTls | None = None,
) -> None:
    from ray import serve

    from cluster.app import APP_NAME, AppConfig, build_app
    from cluster.control.config import ControllerConfig
    from cluster.gateway.replica import GatewaySettings

    exposure = decide(opts.host, demo=opts.demo, insecure=opts.insecure)

    config = AppConfig(
        controller=ControllerConfig(
            peers=peers,
            mdns=opts.mdns and not opts.demo,
            mdns_interfaces=opts.mdns_interfaces,
            data_dir=str(data_dir()),
            config_dir=str(config_dir()),
            shutdown_token=token,
            cluster_secret=secret,
            plaintext_agents=opts.plaintext_agents,
        ),
        gateway=GatewaySettings(
            routing=opts.routing,
            ledger=opts.ledger,
            affinity=opts.affinity,
            cluster_secret=secret,
            keys_required=exposure.keys_required,
            admin_digest=admin_digest,
            metrics_open=exposure.metrics_open,
            config_dir=str(config_dir()),
            max_body_bytes=int(opts.max_body_mib * 2**20),
            local_only=opts.local_only,
            idle_timeout_s=opts.idle_timeout_s,
        ),
        gateway_replicas=opts.gateway_replicas,
    )
    http: dict[str, object] = {"host": opts.host, "port": _proxy_port(opts)}
    if endpoint_tls is not None:  # Serve's proxy and the replica's direct ingress both read it
        http |= {"ssl_certfile": str(endpoint_tls.cert), "ssl_keyfile": str(endpoint_tls.key)}
    serve.start(http_options=http)
    serve.run(build_app(config), name=APP_NAME, route_prefix="/")


def claim_port(host: str, port: int, linger_s: float = PORT_LINGER_S) -> str:
    """Wait out a previous run's closing connections on the endpoint's port; "" or why not.

    Serve binds the endpoint without SO_REUSEADDR, so a head restarted within a minute of a
    crash would otherwise fail to deploy its gateway for a reason no one could see.
    """
    state = port_state(host, port)
    if state == "lingering":
        print(
            f"port {port}: waiting for the previous run's connections to close "
            f"(up to {linger_s:.0f}s)…",
            flush=True,
        )
        deadline = time.monotonic() + linger_s
        while state == "lingering" and time.monotonic() < deadline:
            time.sleep(0.5)
            state = port_state(host, port)
    if state == "taken":
        return f"port {port} on {host} is in use by another program; choose another with --port"
    if state == "lingering":
        return (
            f"port {port} on {host} is still held after {linger_s:.0f}s; choose another with --port"
        )
    return ""


def endpoint_tls(opts: UpOptions) -> tls.EndpointTls | None:
    """The certificate the endpoint serves, if any; announced with its fingerprint."""
    if opts.tls_self_signed:
        made, new = tls.self_signed(config_dir(), tls.machine_names(opts.host))
    elif opts.tls_cert and opts.tls_key:
        made, new = tls.given(Path(opts.tls_cert), Path(opts.tls_key)), False
    else:
        return None
    print(
        f"TLS: {'made ' if new else ''}{made.cert} (SHA-256 {made.fingerprint}); the CLI "
        f"trusts it with --ca {made.cert} or --fingerprint {made.fingerprint}",
        flush=True,
    )
    return made


def pin_ray_auth(opts: UpOptions) -> str:
    """Ray's token auth for the Ray this process starts or joins, in the environment its
    processes (and the agent) inherit; "" or why it may not start."""
    try:
        os.environ.update(ray_auth.ray_env(os.environ, config_dir(), insecure=opts.insecure))
    except ray_auth.RayAuthRefused as exc:
        return str(exc)
    if os.environ.get(ray_auth.MODE_ENV, "").lower() != "token":
        print(
            "WARNING: --insecure: Ray runs without token auth; anyone who reaches its ports "
            "can run code on this machine",
            file=sys.stderr,
            flush=True,
        )
    return ""


def wait_ready(
    url: str, timeout_s: float, want_model: bool, verify: ssl.SSLContext | bool = True
) -> list[str]:
    """Poll the endpoint until it answers (and, if asked, lists a model); returns the models."""
    deadline, said = time.monotonic() + timeout_s, ""
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.HTTPError, ValueError, KeyError):
            r = httpx.get(f"{url}/health", timeout=2, verify=verify)  # open, unlike /v1/models
            if r.status_code == 200:
                models = list(r.json()["models"])
                if models or not want_model:
                    return models
            elif r.status_code == 503 and (why := str(r.json()["reason"])) != said:
                said = why  # each reason once: the controller retries, it need not be told
                print(f"not ready: {visible(why)} (retrying)", file=sys.stderr, flush=True)
        time.sleep(0.5)
    raise TimeoutError(f"no model became ready at {url} within {timeout_s:.0f}s")


def up(opts: UpOptions) -> int:
    """Run the cluster in the foreground until interrupted; returns the exit code."""
    data = private_dir(data_dir())
    secret = cluster_secret(opts)
    try:
        served_tls = endpoint_tls(opts)
    except tls.TlsError as exc:
        print(f"cluster up: {exc}", file=sys.stderr, flush=True)
        return 1
    scheme = "https" if served_tls else "http"
    url = f"{scheme}://{_display_host(opts.host)}:{opts.port}"
    # Its own endpoint, checked against the very certificate it serves.
    verify = tls.pinned_context(served_tls.cert.read_bytes()) if served_tls else True
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    agent: subprocess.Popen[bytes] | None = None
    started_ray = False
    token, flush = secrets.token_hex(16), None
    exposure = decide(opts.host, demo=opts.demo, insecure=opts.insecure)
    print(exposure.notice, file=sys.stderr if exposure.warn else sys.stdout, flush=True)
    try:
        admin, token_path = admin_token.ensure()
    except OSError as exc:
        print(f"cluster up: cannot keep the admin token in {config_dir()}: {exc}", file=sys.stderr)
        return 1
    print(f"admin token: {token_path} (owner-only; the CLI reads it there)", flush=True)
    if why := pin_ray_auth(opts):  # before anything starts
        print(f"cluster up: {why}", file=sys.stderr, flush=True)
        return 1
    try:
        if opts.port > 0 and not opts.ray_address and (why := claim_port(opts.host, opts.port)):
            print(f"cluster up: {why}", file=sys.stderr, flush=True)
            return 1
        if unwritten := _write_state(data, url):  # at once, not when it is serving
            print(f"cluster up: {unwritten}", file=sys.stderr, flush=True)
            return 1
        peers = opts.peers
        if opts.local_agent:
            agent, address = start_local_agent(opts, data, secret)
            peers = (*peers, address)
        started_ray = _start_ray(opts)
        try:
            _run_app(opts, peers, token, digest(admin), secret, served_tls)
        except RuntimeError as exc:  # Serve's "Deploying application ... failed: ..."
            print(
                f"cluster up: the meterless app did not start: {_first_line(exc)} "
                "(Ray's logs: /tmp/ray/session_latest/logs/serve)",
                file=sys.stderr,
                flush=True,
            )
            return 1
        flush = (url, token, verify)
        print(f"meterless endpoint: {url}/v1  (admin: cluster nodes --url {url})", flush=True)
        try:
            models = wait_ready(url, opts.ready_timeout_s, opts.local_agent, verify)
        except TimeoutError as exc:  # one line, not a traceback; the cluster stops below
            print(f"cluster up: {exc}", file=sys.stderr, flush=True)
            return 1
        served = ", ".join(visible(m) for m in models)
        print(f"ready: serving {served or 'no models yet'}", flush=True)
        while not stop.wait(0.5):
            if agent is not None and agent.poll() is not None:
                print(f"the local node agent exited ({agent.returncode})", file=sys.stderr)
                agent = None
        return 0
    finally:
        _shutdown(opts, agent, started_ray, data, flush)


def _shutdown(
    opts: UpOptions,
    agent: subprocess.Popen[bytes] | None,
    started_ray: bool,
    data: Path,
    flush: tuple[str, str, ssl.SSLContext | bool] | None,
) -> None:
    # Ray's failure-signal handler (absl) arms a 3 s alarm on SIGTERM and aborts the process when
    # it rings; a clean stop (flushing the ledger, waiting for the agent) may take longer.
    signal.alarm(0)
    print("stopping…", flush=True)
    if flush is not None:
        _flush_ledger(*flush)  # before the local agent stops: requests in flight can finish
    if agent is not None and agent.poll() is None:
        agent.terminate()
    with contextlib.suppress(Exception):
        import ray
        from ray import serve

        from cluster.app import APP_NAME

        if ray.is_initialized():
            if not started_ray:
                serve.delete(APP_NAME)
            ray.shutdown()
    if agent is not None:
        try:
            agent.wait(timeout=10)
        except subprocess.TimeoutExpired:
            agent.kill()
    (data / STATE_FILE).unlink(missing_ok=True)


def _flush_ledger(url: str, token: str, verify: ssl.SSLContext | bool) -> None:
    """Have the controller collect every gateway's unsent usage rows while Ray still runs."""
    # Over HTTP, not a Serve handle: a handle used in this driver aborts it at exit.
    try:
        r = httpx.post(
            f"{url}/admin/ledger/flush",
            params={"timeout_s": LEDGER_FLUSH_S},
            headers={"x-meterless-shutdown-token": token},
            timeout=LEDGER_FLUSH_S + 10,
            verify=verify,
        )
        r.raise_for_status()
        done = r.json()
    except (httpx.HTTPError, ValueError) as exc:  # the app never came up, or is going away
        logger.warning("could not flush the usage ledger: %s", exc)
        return
    if not done["complete"]:
        print(
            f"warning: usage of requests still running on gateways {done['waiting_for']} "
            "was not recorded",
            file=sys.stderr,
            flush=True,
        )


def _first_line(exc: BaseException) -> str:
    return next((line.strip() for line in str(exc).splitlines() if line.strip()), repr(exc))


def _display_host(host: str) -> str:
    return "127.0.0.1" if host in ("0.0.0.0", "") else host


def _write_state(data: Path, url: str) -> str | None:
    """Leave this process's id and endpoint for `cluster down`; why it could not, if it could not
    (a full or read-only data dir: said at once, not once the cluster is serving)."""
    path = data / STATE_FILE
    try:
        path.unlink(missing_ok=True)
        write_private(path, json.dumps({"pid": os.getpid(), "url": url}))
    except OSError as exc:
        return f"cannot write {path}: {exc.strerror or exc}"
    return None
