"""An office LAN on one Linux machine: namespaces as hosts on one bridge, and ways to break it.

Every name starts with the office's prefix, `mlb<pid>`, so that parallel runs never collide and
the leftovers of a run that was killed can be found (its pid is gone) and removed:

    root namespace (the test process: a laptop)   <p>c ─veth─ <p>cp ──┐
    namespace <p>-head   eth0 ─veth─ <p>p1 ─────────────────────────────┤ bridge <p>b,
    namespace <p>-a1     eth0 ─veth─ <p>p2 ─────────────────────────────┤ 10.231.N.0/24
    namespace <p>-a2     eth0 ═tap═ wire.py ═tap═ <p>w3 ────────────────┘ (can be impaired)

Nothing leaves the bridge: namespaces have no default route, IPv6 is off, and multicast between
the root namespace and the office is dropped both ways, so mDNS of processes outside the office
(other tests, other agents on this machine) and of the office never meet.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

PREFIX = "mlb"
REPO = Path(__file__).resolve().parents[2]


class NetnsError(RuntimeError):
    """A command that builds or changes the office failed."""


def run(*argv: str, check: bool = True) -> str:
    """Run a command; its stdout, or NetnsError with its stderr."""
    done = subprocess.run(argv, capture_output=True, text=True)
    if check and done.returncode != 0:
        raise NetnsError(f"{' '.join(argv)}: {done.stderr.strip() or done.returncode}")
    return done.stdout


def usable() -> str:
    """Why this machine cannot build an office, or "" when it can."""
    if os.geteuid() != 0:
        return "needs root to build network namespaces (CI runs as root)"
    if not Path("/dev/net/tun").exists():
        return "needs /dev/net/tun for the impairable link"
    return ""


@dataclass
class Host:
    """One namespace: a machine on the office LAN."""

    name: str
    ns: str
    address: str
    port: str  # its link's interface on the bridge, in the root namespace
    device: str = "eth0"
    wire: subprocess.Popen[str] | None = None
    extra_ports: list[str] = field(default_factory=list)  # second interfaces' bridge ends

    def cmd(self, *argv: str) -> list[str]:
        """`argv` as run inside this host."""
        return ["ip", "netns", "exec", self.ns, *argv]

    def run(self, *argv: str, check: bool = True) -> str:
        """Run a command inside this host."""
        return run(*self.cmd(*argv), check=check)

    def pids(self) -> list[int]:
        """Every process running inside this host."""
        return [int(p) for p in run("ip", "netns", "pids", self.ns, check=False).split()]


class Office:
    """A bridge, the root namespace's seat on it, and the hosts added to it; `close` removes all."""

    def __init__(self) -> None:
        self.prefix = f"{PREFIX}{os.getpid()}"
        self.bridge = f"{self.prefix}b"
        self.hosts: dict[str, Host] = {}
        self._links = 0
        self._dead_lan = ""
        self.net = _free_subnet()
        self.client_address = self.ip(1)
        try:
            self._build_lan()
        except BaseException:
            self.close()
            raise

    def ip(self, n: int) -> str:
        """The n-th address of the office subnet."""
        return str(self.net.network_address + n)

    def _build_lan(self) -> None:
        bridge = "type bridge forward_delay 0 mcast_snooping 0"
        run("ip", "link", "add", self.bridge, *bridge.split())
        _no_ipv6(self.bridge)
        run("ip", "link", "set", self.bridge, "up")
        seat, port = f"{self.prefix}c", f"{self.prefix}cp"
        run("ip", "link", "add", seat, "type", "veth", "peer", "name", port)
        for dev in (seat, port):
            _no_ipv6(dev)
        self._plug(port)
        run("ip", "addr", "add", f"{self.client_address}/{self.net.prefixlen}", "dev", seat)
        run("ip", "link", "set", seat, "up")
        drop_multicast((), seat)
        drop_multicast((), port)

    def _plug(self, port: str, bridge: str = "") -> None:
        run("ip", "link", "set", port, "master", bridge or self.bridge)
        run("ip", "link", "set", port, "up")

    def add_host(self, name: str, *, wired: bool = False) -> Host:
        """A new namespace on the LAN with the next free address; `wired`: an impairable link."""
        self._links += 1
        i = self._links
        host = Host(
            name=name,
            ns=f"{self.prefix}-{name}",
            address=self.ip(10 + i),
            port=f"{self.prefix}{'w' if wired else 'p'}{i}",
        )
        self.hosts[name] = host
        run("ip", "netns", "add", host.ns)
        for scope in ("all", "default"):  # /proc/sys/net is the namespace's own, inside it
            host.run("sh", "-c", f"echo 1 > /proc/sys/net/ipv6/conf/{scope}/disable_ipv6")
        host.run("ip", "link", "set", "lo", "up")
        inner = f"{self.prefix}h{i}"
        if wired:
            host.wire = _start_wire(inner, host.port)
        else:
            run("ip", "link", "add", inner, "type", "veth", "peer", "name", host.port)
        _no_ipv6(host.port)
        run("ip", "link", "set", inner, "netns", host.ns)
        host.run("ip", "link", "set", inner, "name", host.device)
        self._plug(host.port)
        self._address(host, host.device, host.address, self.net.prefixlen)
        return host

    def _address(self, host: Host, device: str, address: str, prefixlen: int) -> None:
        host.run("ip", "addr", "add", f"{address}/{prefixlen}", "dev", device)
        host.run("ip", "link", "set", device, "up")
        # mDNS needs a route for multicast; without a default route, give it one explicitly.
        host.run("ip", "route", "replace", "224.0.0.0/4", "dev", device)

    def add_dead_interface(self, host: Host) -> str:
        """Give `host` a second interface, up, on a LAN where nobody else is; returns its address.

        Nobody routes between that LAN and the office: the host becomes multi-homed with one
        address (this one) that no other host can reach.
        """
        if not self._dead_lan:
            self._dead_lan = f"{self.prefix}d"
            run("ip", "link", "add", self._dead_lan, "type", "bridge")
            _no_ipv6(self._dead_lan)
            run("ip", "link", "set", self._dead_lan, "up")
        self._links += 1
        inner, port = f"{self.prefix}h{self._links}", f"{self.prefix}x{self._links}"
        run("ip", "link", "add", inner, "type", "veth", "peer", "name", port)
        _no_ipv6(port)
        run("ip", "link", "set", inner, "netns", host.ns)
        device = f"eth{len(host.extra_ports) + 1}"
        host.run("ip", "link", "set", inner, "name", device)
        self._plug(port, self._dead_lan)
        host.extra_ports.append(port)
        address = str(self.dead_net.network_address + int(host.address.rsplit(".", 1)[1]))
        host.run("ip", "addr", "add", f"{address}/{self.dead_net.prefixlen}", "dev", device)
        host.run("ip", "link", "set", device, "up")
        return address

    @property
    def dead_net(self) -> ipaddress.IPv4Network:
        """The subnet of the LAN that only second interfaces are on (sorts before the office's)."""
        return ipaddress.IPv4Network(f"10.230.{self.net.network_address.packed[2]}.0/24")

    def blackhole_dead_net(self, host: Host) -> None:
        """Route the dead LAN, from `host`, to a neighbour that does not exist on the office LAN.

        As behind a real router: connecting there is not refused at once, it times out.
        """
        host.run("ip", "route", "replace", str(self.dead_net), "via", self.ip(254))

    # -- breaking things ---------------------------------------------------------------------

    def cut(self, host: Host) -> None:
        """Unplug the host's cable: its link goes down at the bridge, nothing is sent or refused."""
        run("ip", "link", "set", host.port, "down")

    def restore(self, host: Host) -> None:
        """Plug the cable back in."""
        run("ip", "link", "set", host.port, "up")

    def block_multicast(self, host: Host) -> None:
        """Drop multicast to and from the host (as Wi-Fi client isolation does); unicast works."""
        drop_multicast(host.cmd(), host.device)
        drop_multicast((), host.port)

    def impair(self, host: Host, delay_ms: float, loss_percent: float) -> None:
        """Delay and drop frames leaving `host`, as `tc netem delay D loss P` on its interface."""
        if host.wire is None or host.wire.stdin is None:
            raise NetnsError(f"{host.name} was not built with an impairable link (wired=True)")
        host.wire.stdin.write(f"impair {delay_ms} {loss_percent}\n")
        host.wire.stdin.flush()

    def kill_all(self, host: Host, sig: int = signal.SIGKILL) -> list[int]:
        """Send `sig` to every process in the host (as pulling its power cord would); their pids."""
        pids = host.pids()
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        return pids

    # -- teardown ------------------------------------------------------------------------------

    def close(self) -> None:
        """Kill every process in the office's hosts and remove every namespace, link and bridge."""
        for host in self.hosts.values():
            self.kill_all(host)
            if host.wire is not None:
                host.wire.kill()
                host.wire.wait()
        remove(self.prefix)


def drop_multicast(prefix: Sequence[str], device: str) -> None:
    """Drop IPv4 multicast leaving `device`: HTB sends it to a class whose queue holds nothing.

    Built from what minimal kernels have (htb, u32, pfifo), not netfilter or tc actions.
    """
    tc = [*prefix, "tc"]
    run(*tc, *f"qdisc replace dev {device} root handle 1: htb default 1".split())
    for classid, rate in (("1:1", "10gbit"), ("1:2", "8kbit")):
        run(*tc, *f"class add dev {device} parent 1: classid {classid} htb rate {rate}".split())
    run(*tc, *f"qdisc add dev {device} parent 1:2 pfifo limit 0".split())
    run(
        *tc,
        *f"filter add dev {device} parent 1: protocol ip prio 1 u32".split(),
        *"match ip dst 224.0.0.0/4 flowid 1:2".split(),
    )


def _no_ipv6(device: str) -> None:
    """No IPv6 on a root-namespace interface: no link-local mDNS over IPv6 either."""
    with contextlib.suppress(OSError):
        Path(f"/proc/sys/net/ipv6/conf/{device}/disable_ipv6").write_text("1")


def _free_subnet() -> ipaddress.IPv4Network:
    """A 10.231.N.0/24 that no interface of the root namespace uses (parallel offices differ)."""
    taken = run("ip", "-4", "-o", "addr", "show")
    for n in [os.getpid() % 200 + 20, *range(20, 250)]:
        net = ipaddress.IPv4Network(f"10.231.{n}.0/24")
        if f" 10.231.{n}." not in taken:
            return net
    raise NetnsError("no free 10.231.N.0/24 subnet left")


def _start_wire(host_tap: str, lan_tap: str) -> subprocess.Popen[str]:
    """The user-space link process, once it has made both taps."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.multihost.wire", host_tap, lan_tap],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=REPO,
    )
    assert proc.stdout is not None
    if proc.stdout.readline().strip() != "ready":
        proc.kill()
        raise NetnsError(f"the wire between {host_tap} and {lan_tap} did not start")
    return proc


def remove(prefix: str) -> None:
    """Remove every namespace, link and bridge of the office `prefix`, killing what runs inside."""
    for ns in run("ip", "netns", "list").split():
        if _owner(ns) == prefix:
            for pid in run("ip", "netns", "pids", ns, check=False).split():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(pid), signal.SIGKILL)
            _retry(lambda ns=ns: run("ip", "netns", "del", ns))
    for link in _links():
        if _owner(link) == prefix:
            run("ip", "link", "del", link, check=False)


def sweep() -> list[str]:
    """Remove the offices of runs that died without cleaning up; the prefixes removed."""
    names = [*run("ip", "netns", "list").split(), *_links()]
    dead = {
        o for o in map(_owner, names) if o and not Path(f"/proc/{o.removeprefix(PREFIX)}").exists()
    }
    for prefix in dead:
        remove(prefix)
    return sorted(dead)


def _owner(name: str) -> str:
    """The office prefix (`mlb<pid>`) a namespace or link name belongs to, or ""."""
    match = re.match(rf"{PREFIX}\d+", name)
    return match.group(0) if match else ""


def _links() -> list[str]:
    return [
        line.split(":")[1].strip().split("@")[0]
        for line in run("ip", "-o", "link", "show").splitlines()
    ]


def _retry(action, attempts: int = 20) -> None:  # type: ignore[no-untyped-def]
    """Run `action` until it works: a namespace may be busy a moment after its processes died."""
    for i in range(attempts):
        try:
            action()
            return
        except NetnsError:
            if i == attempts - 1:
                raise
            time.sleep(0.1)
