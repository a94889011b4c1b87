"""Rogues on the office LAN: two hosts advertise agents over mDNS without the office's secret.

One has no join token at all (it serves plaintext), one holds another cluster's. Both must be
listed as rejected with the reason, and none of the office's traffic may reach them. Runs after
test_office.py (the office is shared), and leaves the rogues' hosts on the LAN, stopped.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import pytest

from cluster.node_client import PLAINTEXT_REASON, WRONG_SECRET_REASON
from node_agent.trust import ClusterSecret, encode_token
from tests.harness import share_models
from tests.multihost.clients import agent_counters, fates, load, report
from tests.multihost.office import Agent, Bed, wait_for

pytestmark = [pytest.mark.multihost, pytest.mark.timeout(600)]


def listed_at(bed: Bed, address: str) -> list[dict[str, Any]]:
    """The admin API's nodes whose address is `address`."""
    return [n for n in bed.head.get("/admin/nodes")["nodes"] if n["address"] == address]


def test_rogues_on_the_lan_are_rejected_and_never_served(
    bed: Bed, tmp_path: Path, demo_model_dir: Path
) -> None:
    other = ClusterSecret(os.urandom(32))
    plain = Agent(
        bed.net.add_host("rogue"), share_models(tmp_path / "rogue", demo_model_dir.parent)
    )
    impostor = Agent(
        bed.net.add_host("impostor"),
        share_models(tmp_path / "impostor", demo_model_dir.parent),
        join_token=encode_token(other),
    )
    try:
        for rogue in (plain, impostor):
            rogue.start()
        listening = max(rogue.wait_listening() for rogue in (plain, impostor))
        wait_for(
            lambda: all(
                [n["state"] for n in listed_at(bed, r.address)] == ["rejected"]
                for r in (plain, impostor)
            ),
            30,
            "both rogues rejected",
        )
        rejected_after = time.monotonic() - listening
        [plain_node] = listed_at(bed, plain.address)
        [impostor_node] = listed_at(bed, impostor.address)
        assert (plain_node["name"], plain_node["reason"]) == ("rogue", PLAINTEXT_REASON)
        assert impostor_node["reason"] == WRONG_SECRET_REASON and impostor_node["models"] == []

        with load(bed.head.url, workers=4) as running:
            wait_for(lambda: len(running.seen) >= 24, 180, "24 requests through the office")
        assert fates(running.seen) == {"ok": len(running.seen)}, fates(running.seen)
        members = {
            n["node_id"] for n in bed.head.get("/admin/nodes")["nodes"] if n["state"] == "ready"
        }
        assert {s.node for s in running.seen} <= members
        assert agent_counters(plain.address, None) == 0
        assert agent_counters(impostor.address, other) == 0
        assert "NO JOIN TOKEN" in plain.log()
        assert all(
            n["state"] == "rejected" for r in (plain, impostor) for n in listed_at(bed, r.address)
        )
        report("rogues", rejected_after_listening_s=rejected_after, requests=len(running.seen))
    finally:
        for rogue in (plain, impostor):
            rogue.stop()
