"""One office for the multi-host tests: built once, measured as it comes up, torn down always.

head   `cluster up`, browsing mDNS on the LAN only, with `--peer iso`
a1 a2 a3  agents found over mDNS
iso    an agent whose multicast is blocked both ways: it joins through `--peer`
multi  an agent with a second interface on a LAN the head cannot reach, whose address
       sorts first: the head must try it, give up, and use the one that works

Every agent's link can be impaired (see wire.py): which node routing favours is only known once
traffic flows, and that is the node whose link must turn bad for a shift to show.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.harness import share_models
from tests.multihost import netns
from tests.multihost.office import AGENT_PORT, MDNS_AGENTS, Agent, Bed, Head


@pytest.fixture(scope="session")
def bed(tmp_path_factory: pytest.TempPathFactory, demo_model_dir: Path) -> Iterator[Bed]:
    """The office above, every agent ready."""
    if why := netns.usable():
        pytest.skip(why)
    netns.sweep()
    root = tmp_path_factory.mktemp("office")
    net = netns.Office()
    head: Head | None = None
    agents: dict[str, Agent] = {}
    try:
        head_host = net.add_host("head")
        for name in (*MDNS_AGENTS, "iso", "multi"):
            net.add_host(name, wired=True)  # any of them may be the one to slow down
        net.block_multicast(net.hosts["iso"])
        net.add_dead_interface(net.hosts["multi"])
        net.blackhole_dead_net(head_host)
        head = Head(
            head_host,
            _dir(root / "head"),
            args=("--peer", f"{net.hosts['iso'].address}:{AGENT_PORT}"),
            plaintext_agents=False,
        )
        token = head.join_token()  # the office runs as deployed: every agent joins with it
        head.start()
        agents = {
            name: Agent(
                net.hosts[name], share_models(root / name, demo_model_dir.parent), join_token=token
            )
            for name in (*MDNS_AGENTS, "iso", "multi")
        }
        # These two start with Ray (an agent takes seconds to import its engine); the three
        # whose discovery is timed start once the head browses.
        agents["iso"].start()
        agents["multi"].start()
        head.wait_up()
        for name in MDNS_AGENTS:
            agents[name].start()
        bed = Bed(net, head, agents, token=token)
        _watch_arrivals(bed)
        yield bed
    finally:
        for agent in agents.values():
            agent.kill()
        if head is not None:
            head.stop()
        net.close()


def _dir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


def _watch_arrivals(bed: Bed, timeout: float = 120.0) -> None:
    """Record, per agent, the seconds from its port answering to its node being ready."""
    deadline = time.monotonic() + timeout
    while len(bed.ready_after_s) < len(bed.agents):
        for agent in bed.agents.values():
            if not agent.listening_at:
                agent.listening_at = time.monotonic() if _answers(agent) else 0.0
        ready = {n for n, v in bed.head.nodes().items() if v["state"] == "ready"}
        now = time.monotonic()
        for name in ready - bed.ready_after_s.keys():
            listening = bed.agents[name].listening_at or now
            bed.ready_after_s[name] = now - listening
        if now > deadline:
            missing = sorted(bed.agents.keys() - bed.ready_after_s.keys())
            raise AssertionError(f"agents not ready after {timeout:.0f}s: {missing}")
        time.sleep(0.05)


def _answers(agent: Agent) -> bool:
    try:
        return agent._listening()
    except OSError:
        return False
