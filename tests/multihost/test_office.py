"""A real office in one machine: discovery, isolation, multi-homing, and failures across hosts.

One office serves every test (see conftest.py); each test leaves it as it found it, and those
that kill things come last. Figures are printed: run with `-rP` to see them.
"""

from __future__ import annotations

import collections
import os
import signal
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager

import openai
import pytest

from tests.multihost.clients import (
    Seen,
    agent_counters,
    disagreements,
    fates,
    ledger_ids,
    ledger_rows,
    load,
    quiet_usage,
    report,
    stream_chat,
    tally,
    wait_recorded,
)
from tests.multihost.office import AGENT_PORT, HTTP_PORT, MDNS_AGENTS, Bed, Head, wait_for

pytestmark = [pytest.mark.multihost, pytest.mark.timeout(900)]

CONTROLLER = "ServeReplica:meterless:controller"  # the Ray actor's process title
PORT_WAIT = "waiting for the previous run's connections to close"  # `cluster up`, restarted


def node_id(head: Head, name: str) -> str:
    """The node id of the node called `name`."""
    return str(head.nodes()[name]["node_id"])


def client(head: Head) -> openai.OpenAI:
    """The official client, pointed at the endpoint from the root namespace's seat on the LAN."""
    return openai.OpenAI(base_url=f"{head.url}/v1", api_key="unused", max_retries=0, timeout=60)


@contextmanager
def only(head: Head, name: str) -> Iterator[None]:
    """Drain every other node for a while, so that requests can only go to `name`."""
    others = [n for n in head.nodes() if n != name]
    try:
        for other in others:
            head.client.post(f"{head.url}/admin/nodes/{other}/drain").raise_for_status()
        yield
    finally:
        for other in others:
            head.client.post(f"{head.url}/admin/nodes/{other}/uncordon")


def serves(head: Head, name: str, n: int = 3) -> list[Seen]:
    """`n` streamed requests with only `name` routable; each must finish on it."""
    with only(head, name):
        seen = [stream_chat(client(head), i) for i in range(n)]
    want = node_id(head, name)
    assert all(s.fate == "ok" and s.node == want and s.completion_tokens for s in seen), seen
    return seen


def sessions_of(head: Head, name: str) -> list[dict[str, object]]:
    """The controller's sessions that reached the node called `name`."""
    want = node_id(head, name)
    return [s for s in head.sessions() if s["node_id"] == want]


# -- 1. discovery --------------------------------------------------------------------------------


def test_agents_appear_over_mdns_within_5s(bed: Bed) -> None:
    for name in MDNS_AGENTS:
        assert bed.ready_after_s[name] <= 5.0, bed.ready_after_s
        assert {s["via"] for s in sessions_of(bed.head, name)} == {"mdns"}
    report("discovery", **{f"{n}_s": bed.ready_after_s[n] for n in MDNS_AGENTS})


# -- 2. multicast blocked ------------------------------------------------------------------------


def test_host_without_multicast_joins_through_peer(bed: Bed) -> None:
    iso = bed.agents["iso"]
    assert [s["via"] for s in sessions_of(bed.head, "iso")] == ["peer"]  # mDNS never got through
    assert bed.head.nodes()["iso"]["address"] == iso.address
    serves(bed.head, "iso")
    report("multicast-blocked", ready_after_s=bed.ready_after_s["iso"])


# -- 3. multi-homed ------------------------------------------------------------------------------


def test_multi_homed_host_is_reached_where_it_works(bed: Bed) -> None:
    multi = bed.agents["multi"]
    [session] = sessions_of(bed.head, "multi")
    dead = f"{bed.net.dead_net.network_address + int(multi.host.address.rsplit('.', 1)[1])}"
    assert session["address"] == multi.address
    assert f"{dead}:{AGENT_PORT}" in session["errors"]  # it was tried, first, and failed
    assert bed.head.nodes()["multi"]["address"] == multi.address
    serves(bed.head, "multi")
    report("multi-homed", ready_after_s=bed.ready_after_s["multi"], tried=session["errors"])


# -- 4. a node killed under load -----------------------------------------------------------------


def test_node_killed_under_load(bed: Bed) -> None:
    head, victim = bed.head, bed.agents["a1"]
    victim_id = node_id(head, "a1")
    before = quiet_usage(head)
    try:
        with load(head.url, workers=6) as running:
            wait_for(lambda: running.streaming_on(victim_id), 60, "a stream on a1", interval=0.02)
            victim.kill()
            killed = time.monotonic()
            wait_for(lambda: head.state("a1") == "lost", 10, "a1 to be lost", interval=0.05)
            lost_after = time.monotonic() - killed
            time.sleep(3)  # the survivors carry the load for a while
    finally:
        if victim.proc is None or victim.proc.poll() is not None:
            victim.start()
    restarted = time.monotonic()
    seen, counts = running.seen, fates(running.seen)
    broken = [s for s in seen if s.fate == "broken"]
    recorded = wait_recorded(head, before, len(seen))
    wait_for(lambda: head.state("a1") == "ready", 120, "a1 to be ready again")
    back_after = time.monotonic() - restarted
    report(
        "node-killed",
        lost_after_s=lost_after,
        ready_after_restart_s=back_after,
        requests=len(seen),
        failed=counts["failed"],
        broken_mid_stream=len(broken),
    )

    assert counts["failed"] == 0, [s for s in seen if s.fate == "failed"]
    assert all(s.node == victim_id and "failed mid-stream" in s.error for s in broken), broken
    assert all(s.prompt_tokens and s.completion_tokens for s in broken), broken  # usage first
    assert lost_after <= 3.0, f"lost after {lost_after:.2f}s"
    assert recorded == {n: {**t, "cancelled": 0} for n, t in tally(seen).items()}
    assert disagreements(seen, ledger_rows(head.data_dir)) == []
    serves(head, "a1")


# -- 5. a link cut and restored ------------------------------------------------------------------


def test_link_cut_and_restored(bed: Bed) -> None:
    head, victim = bed.head, bed.agents["a2"]
    victim_id = node_id(head, "a2")
    with load(head.url, workers=4) as running:
        wait_for(lambda: len(running.seen) >= 4, 60, "the load to get going")
        bed.net.cut(victim.host)
        cut = time.monotonic()
        try:
            wait_for(lambda: head.state("a2") == "lost", 60, "a2 to be lost", interval=0.1)
            lost_after = time.monotonic() - cut
            time.sleep(2)
        finally:
            bed.net.restore(victim.host)
        restored = time.monotonic()
        wait_for(lambda: head.state("a2") == "ready", 60, "a2 to be ready again", interval=0.1)
        ready = time.monotonic()
        print(
            f"lost {lost_after:.2f}s after the cut, ready {ready - restored:.2f}s after restoring"
        )
        try:
            served = wait_for(
                lambda: first_ok(running.seen, victim_id, after=ready),
                90,
                "a2 to serve a request again",
            )
        except AssertionError as exc:  # say what routing saw: the rates it chose by, and where
            rates = {n: round(v["decode_tps"], 1) for n, v in head.nodes().items()}
            since = collections.Counter(s.node for s in running.seen if s.began > ready)
            raise AssertionError(
                f"{exc}; measured tokens/s {rates}; served since ready {dict(since)}"
            ) from None
    counts = fates(running.seen)
    report(
        "link-cut",
        lost_after_s=lost_after,
        ready_after_restore_s=ready - restored,
        serving_after_ready_s=served - ready,
        requests=len(running.seen),
        failed=counts["failed"],
        broken=counts["broken"],
    )
    assert counts["failed"] == 0, [s for s in running.seen if s.fate == "failed"]


def first_ok(seen: list[Seen], node: str, after: float) -> float:
    """When the first request begun on `node` after `after` began (0.0: none finished yet)."""
    return min(
        (
            s.began
            for s in seen
            if s.node == node and s.began > after and s.fate == "ok" and s.ended
        ),
        default=0.0,
    )


# -- 7. latency and loss on one link -------------------------------------------------------------


def test_latency_and_loss_on_one_link(bed: Bed) -> None:
    head = bed.head
    by_id = {n["node_id"]: name for name, n in head.nodes().items()}
    phases: dict[str, list[Seen]] = {}
    # Fewer clients than nodes: healthy capacity to spare, so routing has a choice to make.
    with load(head.url, workers=2, max_tokens=16) as running:
        time.sleep(20)
    phases["healthy"] = running.seen
    favourite = max(by_id, key=lambda n: learnt_share(running.seen, n))  # its link turns bad
    slow = bed.agents[by_id[favourite]].host
    try:
        for label, delay_ms, loss in (("50ms-1%", 50, 1), ("300ms-3%", 300, 3)):
            bed.net.impair(slow, delay_ms, loss)
            with load(head.url, workers=2, max_tokens=16) as running:
                time.sleep(20)
            phases[label] = running.seen
    finally:
        bed.net.impair(slow, 0, 0)
    share = {label: learnt_share(seen, favourite) for label, seen in phases.items()}
    every = [s for seen in phases.values() for s in seen]
    report(
        "latency-loss",
        node=by_id[favourite],
        **{f"share_{k}": v for k, v in share.items()},
        requests=len(every),
        failed=fates(every)["failed"],
        broken=fates(every)["broken"],
    )
    assert set(fates(every)) == {"ok"}, fates(every)
    assert share["300ms-3%"] < share["healthy"] / 2


def learnt_share(seen: list[Seen], node: str, learn_s: float = 5.0) -> float:
    """`node`'s share of the requests begun once routing had `learn_s` to measure the links."""
    start = min(s.began for s in seen) + learn_s
    later = [s for s in seen if s.began >= start]
    return sum(s.node == node for s in later) / max(len(later), 1)


# -- 6. the controller killed and restarted ------------------------------------------------------


def test_controller_replica_killed_under_load(bed: Bed) -> None:
    head = bed.head
    old, version = head.pid_of(CONTROLLER), head.get("/admin/nodes")["version"]
    with load(head.url, workers=4) as running:
        wait_for(lambda: len(running.seen) >= 4, 60, "the load to get going")
        os.kill(old, signal.SIGKILL)  # Serve restarts it; gateways and agents carry on
        killed = time.monotonic()
        wait_for(lambda: head.pid_of(CONTROLLER) != old, 120, "Serve to restart the controller")
        wait_for(
            lambda: rediscovered(head, version, len(bed.agents)),
            120,
            "the gateway to take the new controller's table, every node ready",
        )
        back_after = time.monotonic() - killed
        time.sleep(2)
    counts = fates(running.seen)
    ids = {s.request_id for s in running.seen if s.request_id}
    wait_for(lambda: ids <= ledger_ids(head.data_dir), 60, "every request in the ledger")
    report(
        "controller-replica-killed",
        back_after_s=back_after,
        requests=len(running.seen),
        failed=counts["failed"],
        broken=counts["broken"],
        rows_lost=0,
    )
    assert counts["failed"] == 0 and counts["broken"] == 0, counts


def rediscovered(head: Head, old_version: int, nodes: int) -> bool:
    """Whether the gateway routes on a new controller's table with `nodes` nodes ready."""
    answer = head.get("/admin/nodes")  # a new controller's versions start again from 1
    ready = [n for n in answer["nodes"] if n["state"] == "ready"]
    return answer["version"] < old_version and len(ready) == nodes


def leave_port_lingering(head: Head) -> None:
    """A request the head answers and then hangs up on: its end waits out TCP's TIME_WAIT."""
    with socket.create_connection((head.host.address, HTTP_PORT), timeout=10) as s:
        s.sendall(b"GET /health HTTP/1.1\r\nHost: head\r\nConnection: close\r\n\r\n")
        while s.recv(65536):
            pass
    waiting = head.host.run("ss", "-Htan", "state", "time-wait")
    assert f":{HTTP_PORT} " in waiting, waiting


def test_head_killed_and_restarted(bed: Bed) -> None:
    head = bed.head
    before = head.usage()
    with load(head.url, workers=4) as running:
        wait_for(lambda: len(running.seen) >= 8, 120, "some load")
    wait_recorded(head, before, len(running.seen))
    rows = ledger_ids(head.data_dir)
    pids = {n: a.proc.pid for n, a in bed.agents.items() if a.proc}
    loads = {n: a.log().count("demo is ready") for n, a in bed.agents.items()}
    tokens = {n: agent_counters(a.address, bed.secret) for n, a in bed.agents.items()}

    # A head killed with a connection it had closed leaves the port held for a minute; a restart
    # waits that out instead of failing to deploy its gateway (Serve binds without SO_REUSEADDR).
    waited = head.log().count(PORT_WAIT)
    leave_port_lingering(head)
    head.kill()
    head.start()
    started = time.monotonic()
    head.wait_up()
    up = time.monotonic()
    assert head.log().count(PORT_WAIT) == waited + 1
    wait_for(
        lambda: (
            all(n["state"] == "ready" for n in head.nodes().values())
            and len(head.nodes()) == len(bed.agents)
        ),
        30,
        "every node ready again",
    )
    ready = time.monotonic()
    first = stream_chat(client(head), 0)
    served = time.monotonic()
    lost_rows = len(rows - ledger_ids(head.data_dir))
    report(
        "head-killed",
        ray_and_app_up_s=up - started,
        nodes_ready_after_up_s=ready - up,
        served_after_up_s=served - up,
        rows_before=len(rows),
        rows_lost=lost_rows,
    )

    assert first.fate == "ok", first
    assert served - up <= 10.0, f"served {served - up:.1f}s after the endpoint came up"
    assert lost_rows == 0
    assert {n: a.proc.pid for n, a in bed.agents.items() if a.proc} == pids
    assert {n: a.log().count("demo is ready") for n, a in bed.agents.items()} == loads
    assert all(agent_counters(a.address, bed.secret) >= tokens[n] for n, a in bed.agents.items())
