"""Announce the node on the LAN as `<node_id>._meterless._tcp.local.` (mDNS, zeroconf's async API).

The TXT record says who the node is (node_id, proto, engines, name); live state goes over gRPC.
Addresses are the host's usable IPv4 addresses, or those of `--interface`, or `--advertise-address`.
Interfaces are polled every few seconds and the service re-announced when its addresses change
(a laptop moving networks, DHCP renewing), and closing unregisters, so zeroconf sends goodbyes
and the node disappears from browsers at once rather than when its records expire.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import ifaddr
from zeroconf import Error as ZeroconfError
from zeroconf import InterfaceChoice, IPVersion
from zeroconf.asyncio import AsyncServiceInfo, AsyncZeroconf

logger = logging.getLogger(__name__)

SERVICE_TYPE = "_meterless._tcp.local."
POLL_SECONDS = 3.0
_TXT_VALUE_MAX = 200  # a TXT string holds 255 bytes including the key


class AdvertiseError(Exception):
    """The node could not be announced (name taken by another node, no multicast socket)."""


@dataclass(frozen=True, kw_only=True)
class Advertisement:
    """What the node announces about itself."""

    node_id: str
    name: str
    port: int
    engines: tuple[str, ...]
    protocol: str


@dataclass(frozen=True)
class Adapter:
    """One network interface and its IPv4 addresses (ifaddr's view, reduced)."""

    name: str
    ipv4: tuple[str, ...]


def service_name(node_id: str) -> str:
    """The mDNS instance name of a node."""
    return f"{node_id}.{SERVICE_TYPE}"


def txt_record(ad: Advertisement) -> dict[str, str]:
    """The TXT properties: identity only, never live state."""
    return {
        "node_id": ad.node_id,
        "proto": ad.protocol,
        "engines": ",".join(ad.engines),
        "name": ad.name.encode()[:_TXT_VALUE_MAX].decode(errors="ignore"),
    }


def usable_ipv4(adapters: Iterable[Adapter], interfaces: Sequence[str] = ()) -> tuple[str, ...]:
    """The IPv4 addresses to announce: the named interfaces', or every routable one.

    Loopback and link-local addresses are skipped unless an interface is named explicitly;
    when nothing else is left, loopback is announced so a controller on this host still works.
    """
    chosen = [a for a in adapters if not interfaces or a.name in interfaces]
    addresses = [ip for a in chosen for ip in a.ipv4]
    if interfaces:
        return tuple(dict.fromkeys(addresses))
    routable = [ip for ip in addresses if not _local_only(ip)]
    fallback = [ip for ip in addresses if ipaddress.IPv4Address(ip).is_loopback]
    return tuple(dict.fromkeys(routable or fallback))


def _local_only(ip: str) -> bool:
    address = ipaddress.IPv4Address(ip)
    return address.is_loopback or address.is_link_local


def system_adapters() -> list[Adapter]:
    """This host's interfaces and their IPv4 addresses, via ifaddr."""
    return [
        Adapter(a.nice_name, tuple(ip.ip for ip in a.ips if isinstance(ip.ip, str)))
        for a in ifaddr.get_adapters()
    ]


class Advertiser:
    """Keeps one mDNS registration in step with the host's addresses until closed."""

    def __init__(
        self,
        ad: Advertisement,
        *,
        addresses: Sequence[str] = (),
        interfaces: Sequence[str] = (),
        poll_seconds: float = POLL_SECONDS,
        adapters: Callable[[], list[Adapter]] = system_adapters,
    ) -> None:
        self._ad = ad
        self._fixed = tuple(addresses)
        self._interfaces = tuple(interfaces)
        self._poll_seconds = poll_seconds
        self._adapters = adapters
        self._zc: AsyncZeroconf | None = None
        self._info: AsyncServiceInfo | None = None
        self._poller: asyncio.Task[None] | None = None

    @property
    def addresses(self) -> tuple[str, ...]:
        """The addresses announced now (empty when not registered)."""
        return tuple(self._info.parsed_addresses()) if self._info else ()

    async def start(self) -> None:
        """Register the service (when an address is usable) and start watching the interfaces."""
        try:
            await self._sync(self._current())
        except (ZeroconfError, OSError) as exc:
            await self.close()
            raise AdvertiseError(f"{type(exc).__name__}: {exc}") from exc
        if not self._fixed:
            self._poller = asyncio.create_task(self._poll(), name="mdns-address-poll")

    async def close(self) -> None:
        """Unregister (zeroconf sends goodbye packets) and release the sockets."""
        if self._poller is not None:
            self._poller.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._poller
        if self._zc is not None:
            await self._zc.async_close()  # unregisters every service with goodbyes first
            self._zc, self._info = None, None

    def _current(self) -> tuple[str, ...]:
        if self._fixed:
            return self._fixed
        return usable_ipv4(self._adapters(), self._interfaces)

    async def _poll(self) -> None:
        """Re-check the addresses every few seconds; one failure never stops the polling."""
        while True:
            await asyncio.sleep(self._poll_seconds)
            try:
                await self._sync(self._current())
            except Exception:
                logger.exception("mDNS: could not re-announce after an address change")

    async def _sync(self, addresses: tuple[str, ...]) -> None:
        """Register, update or withdraw the service so that it announces `addresses`."""
        if set(addresses) == set(self.addresses):
            return
        if not addresses:
            logger.warning("mDNS: no usable IPv4 address; withdrawing the announcement")
            await self._withdraw()
            return
        zc = await self._zeroconf(addresses)
        info = self._service_info(addresses)
        if self._info is None:
            await (await zc.async_register_service(info))
            logger.info("mDNS: advertising %s on %s", info.name, ", ".join(addresses))
        else:
            await (await zc.async_update_service(info))
            logger.info("mDNS: addresses changed, re-announced on %s", ", ".join(addresses))
        self._info = info

    async def _zeroconf(self, addresses: tuple[str, ...]) -> AsyncZeroconf:
        """The zeroconf instance, sending on the interfaces that carry `addresses`."""
        choice = list(addresses) if (self._fixed or self._interfaces) else InterfaceChoice.All
        if self._zc is None:
            self._zc = AsyncZeroconf(interfaces=choice, ip_version=IPVersion.V4Only)
        else:
            await self._zc.async_update_interfaces(choice)
        return self._zc

    async def _withdraw(self) -> None:
        if self._zc is not None and self._info is not None:
            await (await self._zc.async_unregister_service(self._info))
        self._info = None

    def _service_info(self, addresses: tuple[str, ...]) -> AsyncServiceInfo:
        return AsyncServiceInfo(
            SERVICE_TYPE,
            service_name(self._ad.node_id),
            port=self._ad.port,
            properties=txt_record(self._ad),
            server=f"meterless-{self._ad.node_id}.local.",
            parsed_addresses=list(addresses),
        )
