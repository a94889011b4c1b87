"""mDNS lies from another host: goodbyes and re-announcements for an admitted node, and a flood
of made-up agents. The node stays in routing and the controller's sources stay capped.

mDNS is unauthenticated, so the controller takes it as a hint (cluster/control/node_sessions.py):
a node streaming its status over TLS keeps its session whatever the LAN says about it, and mDNS
sources are capped at ControllerConfig.max_mdns_sources. Runs after test_rogue.py; it leaves no
made-up agent behind (they say goodbye, which ends their sessions).
"""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import pytest

from cluster.control.config import ControllerConfig
from tests.multihost.clients import fates, load, report
from tests.multihost.netns import REPO, Host
from tests.multihost.office import MDNS_AGENTS, Bed, wait_for

pytestmark = [pytest.mark.multihost, pytest.mark.timeout(600)]

CAP = ControllerConfig().max_mdns_sources
FLOOD = CAP + 150


def spoof(host: Host, victim: str, *flags: str) -> None:
    """Run the spoofer (tests/multihost/spoof.py) on `host` against the node `victim`."""
    cmd = host.cmd(sys.executable, "-m", "tests.multihost.spoof", victim, host.address, *flags)
    subprocess.run(cmd, cwd=REPO, check=True, timeout=120, capture_output=True)


def mdns_sources(bed: Bed) -> list[dict[str, Any]]:
    """The controller's sessions for sources found over mDNS."""
    return [s for s in bed.head.sessions() if s["via"] == "mdns"]


def test_spoofed_goodbyes_and_a_flood_leave_the_node_in_routing(bed: Bed) -> None:
    victim = MDNS_AGENTS[0]
    node = bed.head.nodes()[victim]
    assert node["state"] == "ready"
    before = len(mdns_sources(bed))
    liar = bed.net.add_host("liar")
    spoof(liar, node["node_id"], "--flood", str(FLOOD))
    wait_for(lambda: len(mdns_sources(bed)) >= CAP, 60, "the flood to fill the mDNS sources")

    with load(bed.head.url, workers=4) as running:
        wait_for(lambda: len(running.seen) >= 24, 180, "24 requests through the office")
        sources = len(mdns_sources(bed))
        spoof(liar, node["node_id"], "--flood", "0")  # the victim's goodbye again, under load
    assert fates(running.seen) == {"ok": len(running.seen)}, fates(running.seen)
    assert sources <= CAP, f"{sources} mDNS sources for a cap of {CAP}"
    after = bed.head.nodes()[victim]
    assert (after["state"], after["node_id"]) == ("ready", node["node_id"])
    [session] = [s for s in bed.head.sessions() if s["node_id"] == node["node_id"]]
    assert session["address"] == bed.agents[victim].address  # never the liar's

    spoof(liar, node["node_id"], "--flood", str(FLOOD), "--leave")
    wait_for(lambda: len(mdns_sources(bed)) <= before, 60, "the made-up agents to be dropped")
    report("mdns spoofing", flood=FLOOD, cap=CAP, peak_sources=sources, requests=len(running.seen))
