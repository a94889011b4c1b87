"""The agent's settings: one frozen record built from command-line flags and `METERLESS_*` env.

A flag wins over its environment variable, which wins over the default. Bad values end the
program with one readable line and exit code 2 (argparse's convention), never a traceback.

Testing knob (not shown in --help): METERLESS_MEMORY_LIMIT_BYTES caps the memory the agent
believes it has, so that a load which would not fit can be provoked on any machine.
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import socket
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

from node_agent import __version__
from node_agent.trust import ClusterSecret, decode_token
from node_agent.types import CostProfile

DEFAULT_PORT = 50151
ENGINES = ("auto", "mlx", "vllm")
MEMORY_LIMIT_ENV = "METERLESS_MEMORY_LIMIT_BYTES"
LOG_FILE_BYTES = 10 * 2**20
LOG_FILE_BACKUPS = 3


@dataclass(frozen=True, kw_only=True)
class Settings:
    """Everything the agent is told at start; nothing else reads flags or the environment."""

    host: str = "127.0.0.1"  # "0.0.0.0" by default with a join token (see _bind_host)
    port: int = DEFAULT_PORT  # 0: the OS picks a free port
    port_file: Path | None = None
    models: tuple[str, ...] = ()
    engine: str = "auto"
    engine_options: tuple[tuple[str, str], ...] = ()  # KEY=VALUE pairs passed to the engine
    data_dir: Path = field(default_factory=lambda: default_data_dir({}))
    mdns: bool = True
    advertise_addresses: tuple[str, ...] = ()
    interfaces: tuple[str, ...] = ()
    status_interval_ms: int = 500
    max_steps_per_s: float = 0.0
    name: str = field(default_factory=socket.gethostname)
    cost: CostProfile = field(default_factory=CostProfile)
    memory_limit_bytes: int | None = None
    log_level: str = "info"
    log_file: Path | None = None  # rotated at LOG_FILE_BYTES, LOG_FILE_BACKUPS kept; else stderr
    cluster_secret: ClusterSecret | None = None  # from --join-token; None: plaintext, no auth
    insecure: bool = False  # serve plaintext beyond loopback without a join token


def default_data_dir(env: Mapping[str, str]) -> Path:
    """The XDG data directory for meterless (`$XDG_DATA_HOME/meterless`)."""
    base = env.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "meterless"


# --- value parsers: each raises ValueError with a message fit for one line --------------------


def port(text: str) -> int:
    """A TCP port number, 0 meaning 'pick a free one'."""
    value = _int(text)
    if not 0 <= value <= 65535:
        raise ValueError(f"{text!r} is not a port (0-65535)")
    return value


def positive_int(text: str) -> int:
    """An integer above zero."""
    value = _int(text)
    if value <= 0:
        raise ValueError(f"{text!r} must be above zero")
    return value


def non_negative_float(text: str) -> float:
    """A finite number of zero or more."""
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"{text!r} is not a number") from None
    if not (value >= 0 and value != float("inf")):
        raise ValueError(f"{text!r} must be a finite number of zero or more")
    return value


def positive_float(text: str) -> float:
    """A finite number above zero."""
    value = non_negative_float(text)
    if value == 0:
        raise ValueError(f"{text!r} must be above zero")
    return value


def ipv4(text: str) -> str:
    """An IPv4 address in dotted form."""
    try:
        return str(ipaddress.IPv4Address(text.strip()))
    except ValueError:
        raise ValueError(f"{text!r} is not an IPv4 address") from None


def engine(text: str) -> str:
    """One of the engine choices."""
    if text not in ENGINES:
        raise ValueError(f"{text!r} is not one of {', '.join(ENGINES)}")
    return text


def key_value(text: str) -> tuple[str, str]:
    """KEY=VALUE, the key a non-empty name."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise ValueError(f"{text!r} is not KEY=VALUE")
    return key.strip(), value.strip()


def boolean(text: str) -> bool:
    """A yes/no switch as environment variables spell it."""
    lowered = text.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off", ""):
        return False
    raise ValueError(f"{text!r} is not a yes/no value (1/0, true/false, yes/no, on/off)")


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"{text!r} is not a whole number") from None


def _as_argparse_type(parse: Callable[[str], Any]) -> Callable[[str], Any]:
    """Wrap a parser so argparse prints its message rather than a generic one."""

    def convert(text: str) -> Any:
        try:
            return parse(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    convert.__name__ = parse.__name__
    return convert


# --- the command line ---------------------------------------------------------------------------


@dataclass(frozen=True)
class _Option:
    """One setting: its flag, environment variable, parser, and help."""

    flag: str
    dest: str
    env: str
    parse: Callable[[str], Any]
    help: str
    many: bool = False  # repeatable flag; comma-separated in the environment
    metavar: str | None = None


_OPTIONS = (
    _Option(
        "--host",
        "host",
        "METERLESS_HOST",
        str,
        "address the gRPC server listens on (default 0.0.0.0 with a join token, else "
        "127.0.0.1: without one only --insecure opens the agent to the network)",
    ),
    _Option(
        "--port",
        "port",
        "METERLESS_PORT",
        port,
        f"gRPC port (default {DEFAULT_PORT}; 0 lets the OS pick a free one)",
    ),
    _Option(
        "--port-file",
        "port_file",
        "METERLESS_PORT_FILE",
        Path,
        "write the bound port to this file once listening (useful with --port 0)",
        metavar="PATH",
    ),
    _Option(
        "--model",
        "models",
        "METERLESS_MODELS",
        str,
        "model to load at start: a local path, a hub id, or 'demo'; repeat for more "
        "(env: comma-separated)",
        many=True,
        metavar="REF",
    ),
    _Option(
        "--engine",
        "engine",
        "METERLESS_ENGINE",
        engine,
        "inference engine: mlx, vllm, or auto (vllm where an NVIDIA GPU and vllm are "
        "present, else mlx; default auto)",
        metavar="{auto,mlx,vllm}",
    ),
    _Option(
        "--engine-option",
        "engine_options",
        "METERLESS_ENGINE_OPTIONS",
        key_value,
        "an engine option, passed through to the engine; repeatable (env: comma-separated). "
        "vllm: gpu_memory_utilization, kv_cache_memory_bytes, max_model_len, "
        "tensor_parallel_size, dtype, enforce_eager, block_size, max_num_seqs, "
        "enable_prefix_caching, quantization; mlx: max_batch, prompt_cache_entries, "
        "prompt_cache_bytes; both: tool_parser (a tool-call parser family such as json_tools "
        "or qwen3_coder, or none; default: inferred from the model)",
        many=True,
        metavar="KEY=VALUE",
    ),
    _Option(
        "--data-dir",
        "data_dir",
        "METERLESS_DATA_DIR",
        Path,
        "where the node id, generated and downloaded models live "
        "(default ~/.local/share/meterless)",
        metavar="PATH",
    ),
    _Option(
        "--advertise-address",
        "advertise_addresses",
        "METERLESS_ADVERTISE_ADDRESS",
        ipv4,
        "IPv4 address to advertise over mDNS instead of every usable one; repeatable",
        many=True,
        metavar="IP",
    ),
    _Option(
        "--interface",
        "interfaces",
        "METERLESS_INTERFACE",
        str,
        "advertise the IPv4 addresses of this network interface only; repeatable",
        many=True,
        metavar="NAME",
    ),
    _Option(
        "--status-interval-ms",
        "status_interval_ms",
        "METERLESS_STATUS_INTERVAL_MS",
        positive_int,
        "default interval of the status stream in ms (default 500)",
        metavar="MS",
    ),
    _Option(
        "--max-steps-per-s",
        "max_steps_per_s",
        "METERLESS_MAX_STEPS_PER_S",
        non_negative_float,
        "cap decode steps per second, making this node slower on purpose "
        "(to try routing against machines of different speeds); 0: no cap (default)",
        metavar="N",
    ),
    _Option(
        "--name", "name", "METERLESS_NAME", str, "display name of this node (default: the hostname)"
    ),
    _Option(
        "--price-usd",
        "price_usd",
        "METERLESS_PRICE_USD",
        non_negative_float,
        "what the machine cost, in USD (default 0)",
        metavar="USD",
    ),
    _Option(
        "--amortize-months",
        "amortize_months",
        "METERLESS_AMORTIZE_MONTHS",
        positive_float,
        "months the price is written off over (default 36)",
        metavar="MONTHS",
    ),
    _Option(
        "--idle-watts",
        "idle_watts",
        "METERLESS_IDLE_WATTS",
        non_negative_float,
        "power drawn when idle, in watts (default 0)",
        metavar="W",
    ),
    _Option(
        "--busy-watts",
        "busy_watts",
        "METERLESS_BUSY_WATTS",
        non_negative_float,
        "power drawn when generating, in watts (default 0)",
        metavar="W",
    ),
    _Option(
        "--kwh-usd",
        "kwh_usd",
        "METERLESS_KWH_USD",
        non_negative_float,
        "electricity price per kWh, in USD (default 0)",
        metavar="USD",
    ),
    _Option(
        "--join-token",
        "cluster_secret",
        "METERLESS_JOIN_TOKEN",
        decode_token,
        "the cluster's join token (print it with `cluster join-token` on the head): serve "
        "over TLS and accept calls only from holders of the cluster secret. Without it the "
        "agent serves plaintext to anyone. Prefer the environment variable: other users "
        "can list a process's arguments",
        metavar="TOKEN",
    ),
    _Option(
        "--join-token-file",
        "join_token_file",
        "METERLESS_JOIN_TOKEN_FILE",
        Path,
        "read the join token from this file (keep it 0600): how a service manager hands it "
        "over; systemd's LoadCredential= puts it in $CREDENTIALS_DIRECTORY",
        metavar="PATH",
    ),
    _Option(
        "--log-file",
        "log_file",
        "METERLESS_LOG_FILE",
        Path,
        f"log to this file instead of stderr, rotated at {LOG_FILE_BYTES // 2**20} MiB with "
        f"{LOG_FILE_BACKUPS} old files kept (for launchd, which keeps no log of its own)",
        metavar="PATH",
    ),
    _Option(
        "--log-level",
        "log_level",
        "METERLESS_LOG_LEVEL",
        str,
        "log level: debug, info, warning or error (default info)",
        metavar="LEVEL",
    ),
)
_NO_MDNS_ENV = "METERLESS_NO_MDNS"
_INSECURE_ENV = "METERLESS_INSECURE"
_INSECURE_HELP = (
    "without a join token, listen where --host says (default 0.0.0.0) anyway: plaintext "
    "and unauthenticated, anyone who can reach the port may load models and read prompts"
)
_SWITCHES = (("no_mdns", _NO_MDNS_ENV), ("insecure", _INSECURE_ENV))
_COST_FIELDS = ("price_usd", "amortize_months", "idle_watts", "busy_watts", "kwh_usd")
_LOG_LEVELS = ("debug", "info", "warning", "error")


class _Parser(argparse.ArgumentParser):
    """argparse, but a bad value is one line (no usage block) and exit code 2."""

    def error(self, message: str) -> NoReturn:
        """Print one line naming the problem, then exit 2."""
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


OneLineParser = _Parser


def build_parser() -> argparse.ArgumentParser:
    """The `node-agent` argument parser; every flag also reads its METERLESS_* variable."""
    parser = _Parser(
        prog="node-agent",
        description="Serve this machine's models to a meterless cluster over gRPC, "
        "and advertise the node over mDNS.",
        epilog="Each flag can also be set by the environment variable shown; a flag wins.",
    )
    for opt in _OPTIONS:
        parser.add_argument(
            opt.flag,
            dest=opt.dest,
            type=_as_argparse_type(opt.parse),
            action="append" if opt.many else "store",
            metavar=opt.metavar,
            help=f"{opt.help} [env {opt.env}]",
        )
    parser.add_argument(
        "--no-mdns",
        action="store_true",
        default=None,
        help=f"do not advertise over mDNS [env {_NO_MDNS_ENV}=1]",
    )
    parser.add_argument(
        "--insecure",
        action="store_true",
        default=None,
        help=f"{_INSECURE_HELP} [env {_INSECURE_ENV}=1]",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    return parser


def add_service_flags(parser: argparse.ArgumentParser, skip: Sequence[str]) -> None:
    """The agent's flags on another parser (`node-agent service install`), kept as their text."""
    for opt in _OPTIONS:
        if opt.dest not in skip:
            parser.add_argument(
                opt.flag,
                dest=opt.dest,
                type=_as_argparse_type(_validated_text(opt.parse)),
                action="append" if opt.many else "store",
                metavar=opt.metavar,
                help=opt.help,
            )
    parser.add_argument("--no-mdns", action="store_true", help="do not advertise over mDNS")
    parser.add_argument("--insecure", action="store_true", help=_INSECURE_HELP)


def service_environment(args: argparse.Namespace) -> tuple[tuple[str, str], ...]:
    """The METERLESS_* variables that set what `add_service_flags` parsed, for a service file."""
    pairs = [
        (opt.env, ",".join(value) if opt.many else value)
        for opt in _OPTIONS
        if (value := getattr(args, opt.dest, None)) is not None
    ]
    flags = [(env, "1") for dest, env in _SWITCHES if getattr(args, dest, False)]
    return (*pairs, *flags)


def _validated_text(parse: Callable[[str], Any]) -> Callable[[str], str]:
    def check(text: str) -> str:
        parse(text)
        return text

    check.__name__ = parse.__name__
    return check


def load(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> Settings:
    """Settings from `argv` and `env` (default: the process's); exits 2 on a bad value."""
    env = os.environ if env is None else env
    parser = build_parser()
    args = vars(parser.parse_args(argv))
    values: dict[str, Any] = {}
    for opt in _OPTIONS:
        value = args[opt.dest] if args[opt.dest] is not None else _from_env(opt, env, parser)
        if value is not None:
            values[opt.dest] = tuple(value) if opt.many else value
    values["mdns"] = not (args["no_mdns"] or _env_value(_NO_MDNS_ENV, boolean, env, parser))
    values["memory_limit_bytes"] = _env_value(MEMORY_LIMIT_ENV, positive_int, env, parser)
    values.setdefault("data_dir", default_data_dir(env))
    values["log_level"] = values.get("log_level", "info").lower()
    if values["log_level"] not in _LOG_LEVELS:
        parser.error(f"--log-level: {values['log_level']!r} is not one of {', '.join(_LOG_LEVELS)}")
    token_file = values.pop("join_token_file", None)
    if token_file is not None and "cluster_secret" not in values:
        values["cluster_secret"] = _token_from_file(token_file, parser)
    values["insecure"] = bool(args["insecure"] or _env_value(_INSECURE_ENV, boolean, env, parser))
    values["host"] = _bind_host(values, parser)
    cost = {k: values.pop(k) for k in _COST_FIELDS if k in values}
    return Settings(cost=CostProfile(**cost), **values)


def _bind_host(values: Mapping[str, Any], parser: argparse.ArgumentParser) -> str:
    """Where to listen: anywhere with a join token (TLS, callers checked); loopback without one,
    since a plaintext agent lets anyone who reaches it load models and read prompts, unless
    --insecure says the network is trusted. A LAN --host without either is refused, not ignored."""
    host: str | None = values.get("host")
    if values.get("cluster_secret") is not None or values["insecure"]:
        return host or "0.0.0.0"
    if host is None:
        return "127.0.0.1"
    if not _loopback(host):
        parser.error(
            f"--host {host}: without a join token the agent serves plaintext to anyone; "
            "pass --join-token-file (or --join-token), or --insecure on a trusted network"
        )
    return host


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _token_from_file(path: Path, parser: argparse.ArgumentParser) -> ClusterSecret:
    """The secret in a join-token file; one line and exit 2 when it cannot be read."""
    try:
        text = path.read_text()
    except OSError as exc:
        parser.error(f"--join-token-file: cannot read {path}: {exc.strerror or exc}")
    secret: ClusterSecret = _checked(f"--join-token-file {path}", decode_token, text, parser)
    return secret


def _from_env(opt: _Option, env: Mapping[str, str], parser: argparse.ArgumentParser) -> Any:
    """The option's value from its environment variable, or None when unset or empty."""
    if not opt.many:
        return _env_value(opt.env, opt.parse, env, parser)
    raw = env.get(opt.env, "")
    items = [item.strip() for item in raw.split(",") if item.strip()]
    return [_checked(opt.env, opt.parse, item, parser) for item in items] or None


def _env_value(
    name: str, parse: Callable[[str], Any], env: Mapping[str, str], parser: argparse.ArgumentParser
) -> Any:
    raw = env.get(name, "")
    return _checked(name, parse, raw, parser) if raw.strip() else None


def _checked(
    name: str, parse: Callable[[str], Any], raw: str, parser: argparse.ArgumentParser
) -> Any:
    try:
        return parse(raw)
    except ValueError as exc:
        parser.error(f"{name}: {exc}")
