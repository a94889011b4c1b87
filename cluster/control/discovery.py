"""Finding node agents: an mDNS browser for `_meterless._tcp.local.` and the static `--peer` list.

Discovery only says where a node might be reached; whether it is alive and who it is comes
from talking to it (node_sessions.py). TXT records carry just enough to decide whether to talk.
"""

from __future__ import annotations

import asyncio
import logging
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from zeroconf import IPVersion, ServiceStateChange
from zeroconf.asyncio import AsyncServiceBrowser, AsyncServiceInfo, AsyncZeroconf

from cluster.types import protocol_compatible

logger = logging.getLogger(__name__)

SERVICE_TYPE = "_meterless._tcp.local."
NAME_LIMIT = 64  # characters of a name an unauthenticated source chose that we keep


def clean_name(text: str, limit: int = NAME_LIMIT) -> str:
    """`text` without control characters, cut to `limit`: a name anyone on the LAN can choose
    reaches logs, every gateway's table and the admin's terminal."""
    kept = "".join(c for c in text if unicodedata.category(c)[0] != "C")
    return kept if len(kept) <= limit else kept[: limit - 1] + "…"


@dataclass(frozen=True, kw_only=True)
class Sighting:
    """A place where a node may be reached. `key` identifies the source (service or peer)."""

    key: str
    addresses: tuple[str, ...]  # host:port candidates, best first
    node_id: str = ""  # from TXT; empty for a --peer until described
    via: str = "mdns"  # "mdns" or "peer"


def parse_peer(text: str, default_port: int = 50151) -> str:
    """Normalise a `--peer` value to host:port; raises ValueError on nonsense."""
    host, sep, port = text.strip().rpartition(":")
    if not sep:
        host, port = text.strip(), str(default_port)
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"not a HOST:PORT peer: {text!r}")
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def peer_sightings(peers: Sequence[str]) -> list[Sighting]:
    """Sightings for the static peers."""
    return [Sighting(key=f"peer:{p}", addresses=(parse_peer(p),), via="peer") for p in peers]


def sighting_from_info(info: AsyncServiceInfo) -> Sighting | None:
    """A sighting from a resolved service, or None if it says no protocol (not an agent).

    One of another protocol major is still a sighting: once Describe proves who it is, its
    session lists it as incompatible, so that an upgrade gone wrong is seen, not silent.
    """
    txt = {k.decode(): (v or b"").decode() for k, v in (info.properties or {}).items()}
    if not txt.get("proto"):
        logger.warning("ignoring %s: it says no protocol", info.name)
        return None
    if not protocol_compatible(txt["proto"]):
        logger.info(
            "%s advertises protocol %s: describing it all the same", info.name, txt["proto"]
        )
    hosts = info.parsed_scoped_addresses(IPVersion.All)
    addresses = tuple(
        f"[{h}]:{info.port}" if ":" in h else f"{h}:{info.port}"
        for h in sorted(hosts, key=_address_rank)
    )
    return Sighting(key=clean_name(info.name), addresses=addresses, node_id=txt.get("node_id", ""))


def _address_rank(host: str) -> tuple[bool, bool, str]:
    # IPv4 first, link-local last: the likeliest to work across a routed office network.
    return (":" in host, host.startswith(("169.254.", "fe80")), host)


class MdnsBrowser:
    """Browses for agents and reports sightings and goodbyes through two callbacks."""

    def __init__(
        self,
        on_seen: Callable[[Sighting], None],
        on_gone: Callable[[str], None],
        *,
        interfaces: Sequence[str] | None = None,
    ) -> None:
        self._on_seen = on_seen
        self._on_gone = on_gone
        self._interfaces = list(interfaces) if interfaces else None
        self._zc: AsyncZeroconf | None = None
        self._browser: AsyncServiceBrowser | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        """Start browsing on every interface (or the ones given)."""
        kwargs = {"interfaces": self._interfaces} if self._interfaces else {}
        self._zc = AsyncZeroconf(**kwargs)  # type: ignore[arg-type]
        self._browser = AsyncServiceBrowser(
            self._zc.zeroconf, SERVICE_TYPE, handlers=[self._on_change]
        )

    async def close(self) -> None:
        """Stop browsing and release the sockets."""
        for task in list(self._tasks):
            task.cancel()
        if self._browser:
            await self._browser.async_cancel()
        if self._zc:
            await self._zc.async_close()

    def _on_change(
        self, zeroconf: object, service_type: str, name: str, state_change: ServiceStateChange
    ) -> None:
        if state_change is ServiceStateChange.Removed:
            self._on_gone(clean_name(name))  # as its sighting's key
            return
        task = asyncio.get_running_loop().create_task(self._resolve(service_type, name))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _resolve(self, service_type: str, name: str) -> None:
        assert self._zc is not None
        info = AsyncServiceInfo(service_type, name)
        if not await info.async_request(self._zc.zeroconf, 3000):
            logger.info("mDNS: %s did not resolve", name)
            return
        sighting = sighting_from_info(info)
        if sighting and sighting.addresses:
            self._on_seen(sighting)
