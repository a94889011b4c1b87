"""The routing policy: pure functions over fixed tables, no sockets, no clocks."""

from __future__ import annotations

from collections import Counter

import pytest

from cluster.gateway.prefix_keys import (
    prefix_keys_for_messages,
    prefix_keys_for_text,
    session_id,
    with_session,
)
from cluster.gateway.routing import (
    DECODE_CAP,
    STATUS_LAG_S,
    FastestRouter,
    LeastOutstandingRouter,
    LocalLoad,
    PrefixAffinity,
    RoundRobinRouter,
    RouteRequest,
    expected_tokens,
    finish_times_s,
    make_router,
)
from cluster.types import ModelName, NodeId, NodeState, NodeTable, NodeView

M = ModelName("m")
A, B, C = NodeId("a"), NodeId("b"), NodeId("c")


def node(node_id: NodeId, tps: float = 50.0, **kw: object) -> NodeView:
    fields: dict[str, object] = dict(
        node_id=node_id,
        name=node_id,
        address=f"{node_id}:1",
        engines=("mlx",),
        state=NodeState.READY,
        models=(M,),
        decode_tps=tps,
        tps_measured=True,
    )
    fields.update(kw)
    return NodeView(**fields)  # type: ignore[arg-type]


def table(*nodes: NodeView) -> NodeTable:
    return NodeTable(version=1, nodes=nodes)


def req(tokens: int = 100, keys: tuple[int, ...] = ()) -> RouteRequest:
    return RouteRequest(M, tokens, keys)


def issue(router: object, t: NodeTable, load: LocalLoad, n: int, tokens: int = 100) -> Counter[str]:
    """Route n requests, none finishing; the share each node got."""
    got: Counter[str] = Counter()
    for _ in range(n):
        chosen = router.choose(t, req(tokens), load)  # type: ignore[attr-defined]
        assert chosen is not None
        load.start(chosen, tokens)
        got[chosen] += 1
    return got


# -- fastest ------------------------------------------------------------------------------


def test_fast_node_gets_proportionally_more() -> None:
    got = issue(FastestRouter(), table(node(A, 100.0), node(B, 25.0)), LocalLoad(), 100)
    assert got[A] == 80 and got[B] == 20


def test_busy_node_gets_less() -> None:
    # b is as fast, but other clients keep 20 requests on it that this replica cannot see.
    t = table(node(A), node(B, running=8, waiting=12))
    got = issue(FastestRouter(), t, LocalLoad(), 20, tokens=256)
    assert got[A] == 20 and got[B] == 0


def test_reported_load_is_not_counted_twice() -> None:
    load = LocalLoad()
    load.start(A, 500)
    seen = node(A, running=1)  # the node reports the one request this replica sent
    assert finish_times_s([seen], load, 100, 256) == {A: pytest.approx(600 / 50)}


def test_a_request_that_just_ended_is_not_counted_as_someone_elses() -> None:
    load = LocalLoad()
    for _ in range(3):
        load.start(A, 24)
    for at in (10.0, 10.1):
        load.progress(A, 24)
        load.finish(A, 0, at=at)
    stale = node(A, running=3)  # the node's last report still holds all three
    load.tick(10.2)
    assert finish_times_s([stale], load, 24, 256) == {A: pytest.approx(48 / 50)}
    load.tick(10.0 + STATUS_LAG_S + 0.5)  # long after: three running are three others' requests
    assert finish_times_s([stale], load, 24, 256) == {A: pytest.approx((24 + 24 + 2 * 256) / 50)}
    assert load.ended == {}


def test_unmeasured_or_zero_rate_never_divides_by_zero() -> None:
    t = table(node(A, 0.0, tps_measured=False), node(B, 0.0, tps_measured=False))
    assert FastestRouter().choose(t, req(), LocalLoad()) == A


def test_ties_go_to_fewer_in_flight_then_node_id() -> None:
    load = LocalLoad()
    load.start(A, 0)
    assert FastestRouter().choose(table(node(B), node(A)), req(), load) == B
    assert FastestRouter().choose(table(node(B), node(A)), req(), LocalLoad()) == A


def test_affinity_returns_to_the_node_that_served_the_prefix() -> None:
    router, t = FastestRouter(), table(node(A), node(B))
    first = prefix_keys_for_messages([("system", "be brief"), ("user", "hi")])
    router.record(req(keys=first), B)
    follow = prefix_keys_for_messages(
        [("system", "be brief"), ("user", "hi"), ("assistant", "hello"), ("user", "more")]
    )
    load = LocalLoad()
    load.start(B, 40)  # b is a little busier, well within the bound
    assert router.choose(t, req(keys=follow), load) == B


def test_longest_prefix_wins() -> None:
    router, t = FastestRouter(), table(node(A), node(B), node(C))
    keys = prefix_keys_for_messages([("system", "s"), ("user", "u1"), ("user", "u2")])
    router.record(req(keys=keys[:1]), A)  # the shared system prompt was last served by a
    router.record(req(keys=keys[:2]), C)  # this conversation by c
    router.record(req(keys=keys[:1]), A)
    assert router.choose(t, req(keys=keys), LocalLoad()) == C


def test_affinity_broken_when_that_node_is_overloaded() -> None:
    router, t = FastestRouter(), table(node(A), node(B))
    keys = prefix_keys_for_text("x" * 1024)
    router.record(req(keys=keys), B)
    load = LocalLoad()
    load.start(B, 100)  # b: (100 + 100) / 50 = 4.0 s <= 2 * 2.0 s + 0.5 s
    assert router.choose(t, req(keys=keys), load) == B
    load.start(B, 30)  # b: 4.6 s > 4.5 s
    assert router.choose(t, req(keys=keys), load) == A


def test_affinity_off() -> None:
    router, t = make_router("fastest", affinity=False), table(node(A), node(B))
    keys = (1, 2, 3)
    router.record(req(keys=keys), B)
    assert router.choose(t, req(keys=keys), LocalLoad()) == A


def test_affinity_ignores_nodes_that_are_not_candidates() -> None:
    router = FastestRouter()
    keys = (7, 8)
    router.record(req(keys=keys), B)
    t = table(node(A), node(B, state=NodeState.LOST))
    assert router.choose(t, req(keys=keys), LocalLoad()) == A
    assert router.choose(table(node(A), node(B)), req(keys=keys), LocalLoad(), frozenset({B})) == A


# -- candidates ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["fastest", "round-robin", "least-outstanding"])
def test_exclude_for_failover(name: str) -> None:
    router, t = make_router(name), table(node(A), node(B), node(C))
    tried: set[NodeId] = set()
    for _ in range(3):
        chosen = router.choose(t, req(), LocalLoad(), frozenset(tried))
        assert chosen is not None and chosen not in tried
        tried.add(chosen)
    assert router.choose(t, req(), LocalLoad(), frozenset(tried)) is None


@pytest.mark.parametrize("name", ["fastest", "round-robin", "least-outstanding"])
def test_unroutable_nodes_are_never_chosen(name: str) -> None:
    router = make_router(name)
    t = table(
        node(A, 1000.0, state=NodeState.DRAINING),
        node(B, 1000.0, state=NodeState.LOST),
        node(C, 1000.0, state=NodeState.JOINING),
        node(NodeId("d"), 1000.0, models=(ModelName("other"),)),
        node(NodeId("e"), 1.0),
    )
    assert {router.choose(t, req(), LocalLoad()) for _ in range(5)} == {"e"}


@pytest.mark.parametrize("name", ["fastest", "round-robin", "least-outstanding"])
def test_no_candidate_is_none(name: str) -> None:
    router = make_router(name)
    assert router.choose(NodeTable(), req(), LocalLoad()) is None
    assert router.choose(table(node(A, models=())), req(), LocalLoad()) is None


# -- round-robin and least-outstanding ----------------------------------------------------


def test_round_robin_rotates_in_node_id_order() -> None:
    router, t = RoundRobinRouter(), table(node(C), node(A), node(B))
    assert [router.choose(t, req(), LocalLoad()) for _ in range(4)] == [A, B, C, A]


def test_round_robin_stays_fair_when_a_node_leaves() -> None:
    router = RoundRobinRouter()
    assert router.choose(table(node(A), node(B), node(C)), req(), LocalLoad()) == A
    assert router.choose(table(node(A), node(C)), req(), LocalLoad()) == C


def test_least_outstanding_ignores_speed() -> None:
    load = LocalLoad()
    load.start(A, 300)
    load.start(B, 200)
    t = table(node(A, 1000.0), node(B, 1.0), node(C, 1.0, running=1))
    assert LeastOutstandingRouter().choose(t, req(), load) == B


def test_what_the_link_adds_counts_in_the_finish_time() -> None:
    load = LocalLoad()
    load.delivered(A, 0.4, at=0.0)
    assert finish_times_s([node(A)], load, 100, 256) == {A: pytest.approx(0.1 + 100 / 50)}


def test_an_idle_node_behind_a_slow_link_loses_to_an_idle_healthy_one() -> None:
    load = LocalLoad()
    for _ in range(8):  # as fast a node, but its answers keep arriving 0.3 s late
        load.delivered(A, 0.3, at=0.0)
        load.delivered(B, 0.002, at=0.0)
    assert FastestRouter().choose(table(node(A), node(B)), req(), load) == B
    assert FastestRouter().choose(table(node(A), node(B, running=1)), req(), load) == A


# -- local load ---------------------------------------------------------------------------


def test_link_estimate_is_smoothed_capped_and_fades() -> None:
    load = LocalLoad()
    load.delivered(A, -0.01, at=0.0)  # two processes' clocks: the node's time can exceed ours
    assert load.link_s[A] == 0.0
    load.delivered(A, 0.8, at=0.0)
    load.delivered(A, 0.8, at=0.0)
    assert load.link_s[A] == pytest.approx(0.35)  # a quarter of the way, twice
    load.delivered(B, 30.0, at=0.0)  # a stream stalled by an outage counts as 1 s at most
    assert load.link_s[B] == pytest.approx(0.25)
    load.delivered(B, 0.25, at=10.0)  # ten seconds on, what A taught has halved
    assert load.link_s[A] == pytest.approx(0.175)


def test_local_load_progress_and_finish() -> None:
    load = LocalLoad()
    load.start(A, 100)
    load.start(A, 50)
    load.progress(A, 30)
    assert (load.outstanding[A], load.in_flight[A]) == (120, 2)
    load.finish(A, 70)
    assert (load.outstanding[A], load.in_flight[A]) == (50, 1)
    load.progress(A, 80)
    assert load.outstanding[A] == 0
    load.finish(A, 0)
    assert A not in load.outstanding and A not in load.in_flight


# -- prefix keys --------------------------------------------------------------------------


def test_message_keys_chain_and_follow_ups_extend_them() -> None:
    turn1 = [("system", "s"), ("user", "q1")]
    turn2 = [*turn1, ("assistant", "a1"), ("user", "q2")]
    k1, k2 = prefix_keys_for_messages(turn1), prefix_keys_for_messages(turn2)
    assert len(k1) == 2 and len(k2) == 4 and k2[:2] == k1
    assert len(set(k2)) == 4
    assert prefix_keys_for_messages([("ab", "c")]) != prefix_keys_for_messages([("a", "bc")])
    assert prefix_keys_for_messages([("user", "q1")])[0] != k1[1]  # position matters


def test_keys_are_pinned_across_processes() -> None:
    assert prefix_keys_for_messages([("user", "hello")]) == (0xA45E15E96374D97E,)
    assert prefix_keys_for_text("a" * 4, block=4) == (0x15DAA03B2D9BD753,)


def test_text_keys_cover_whole_blocks_only() -> None:
    text = "abcdefgh" * 100  # 800 chars: three whole 256-char blocks
    keys = prefix_keys_for_text(text)
    assert len(keys) == 3
    assert prefix_keys_for_text(text + "more text")[:3] == keys
    assert prefix_keys_for_text("short") == ()
    assert all(0 <= k < 2**64 for k in keys)
    assert prefix_keys_for_text("\ud800" * 256)  # lone surrogates hash instead of raising
    with pytest.raises(ValueError):
        prefix_keys_for_text(text, block=0)


def test_affinity_lru_is_bounded() -> None:
    lru = PrefixAffinity(capacity=3)
    lru.record((1, 2), A)
    lru.record((3,), B)
    lru.record((1,), C)  # refreshes key 1
    lru.record((4,), B)  # evicts key 2, the least recently used
    assert len(lru) == 3
    assert lru.lookup((2,), {A, B, C}) is None
    assert lru.lookup((1,), {A, B, C}) == C
    assert lru.lookup((1, 3, 4), {A, C}) == C


# -- estimates and the factory ------------------------------------------------------------


def test_expected_tokens() -> None:
    assert expected_tokens(0, None) == 256
    assert expected_tokens(0, 0, default_max=64) == 64
    assert expected_tokens(0, 100) == 100
    assert expected_tokens(3200, 100) == 200  # 800 prompt tokens cost 100 decode tokens
    assert expected_tokens(0, 10**6) == DECODE_CAP
    assert expected_tokens(-5, None, default_max=0) == 1


def test_make_router_rejects_unknown_names_and_knobs() -> None:
    assert isinstance(make_router("fastest", balance_factor=3.0), FastestRouter)
    with pytest.raises(ValueError, match="round-robin"):
        make_router("random")
    with pytest.raises(TypeError):
        make_router("round-robin", affinity=True)
    with pytest.raises(ValueError):
        make_router("fastest", balance_factor=0.5)


def test_an_idle_unmeasured_node_gets_one_probe_request_at_a_time() -> None:
    fast, new = node(A, 500.0), node(B, 20.0, tps_measured=False)
    router, load = FastestRouter(), LocalLoad()
    assert router.choose(table(fast, new), req(), load) == B  # idle and unmeasured: probe it
    load.start(B, 100)
    assert router.choose(table(fast, new), req(), load) == A  # one probe in flight is enough
    busy_elsewhere = node(B, 20.0, tps_measured=False, running=1)
    assert router.choose(table(fast, busy_elsewhere), req(), LocalLoad()) == A


def test_an_idle_node_left_alone_is_explored_while_the_best_is_busy() -> None:
    # b measured slow (at low concurrency, say) and was then left alone: without exploring, a
    # busy fast a always finishes sooner, and b's rate would never be measured again.
    fast, slow = node(A, 50.0), node(B, 20.0)
    router, load = FastestRouter(explore_after_s=30.0), LocalLoad()
    load.tick(100.0)
    load.start(A, 10)  # a busy: (10 + 100) / 50 = 2.2 s against b's 5 s
    load.started[B] = 80.0  # b's last request began 20 s ago: not due
    assert router.choose(table(fast, slow), req(), load) == A
    load.tick(110.0)  # 30 s now
    assert router.choose(table(fast, slow), req(), load) == B
    load.start(B, 100)
    assert load.started[B] == 110.0
    assert router.choose(table(fast, slow), req(), load) == A  # one at a time, and then due later
    load.finish(B, 0, 111.0)
    load.tick(111.0)
    assert router.choose(table(fast, slow), req(), load) == A


def test_exploring_needs_a_busy_best_an_idle_target_and_a_clock() -> None:
    fast, slow = node(A, 50.0), node(B, 20.0)
    router = FastestRouter(explore_after_s=30.0)
    quiet = LocalLoad()
    quiet.tick(1000.0)  # b never used here, but a is idle: a quiet cluster takes the fastest
    assert router.choose(table(fast, slow), req(), quiet) == A
    reported_busy = LocalLoad()
    reported_busy.tick(1000.0)  # a busy with others' requests, as its status reports them:
    # (256 + 100) / 500 = 0.7 s, still well ahead of b's 5 s
    assert router.choose(table(node(A, 500.0, running=1), slow), req(), reported_busy) == B
    b_busy_elsewhere = node(B, 20.0, waiting=1)
    assert (
        router.choose(table(node(A, 500.0, running=1), b_busy_elsewhere), req(), reported_busy) == A
    )
    no_clock = LocalLoad()
    no_clock.start(A, 10)
    assert router.choose(table(fast, slow), req(), no_clock) == A
    never = FastestRouter(explore_after_s=None)
    assert never.choose(table(node(A, 500.0, running=1), slow), req(), reported_busy) == A
    with pytest.raises(ValueError):
        FastestRouter(explore_after_s=0)


def test_exploring_takes_the_node_left_alone_longest() -> None:
    load = LocalLoad()
    load.tick(100.0)
    load.start(A, 10)
    load.started.update({B: 10.0, C: 40.0})
    t = table(node(A, 500.0), node(B, 20.0), node(C, 20.0))
    assert FastestRouter(explore_after_s=30.0).choose(t, req(), load) == B


def test_probing_can_be_turned_off() -> None:
    t = table(node(A, 500.0), node(B, 20.0, tps_measured=False))
    assert FastestRouter(probe_unmeasured=False).choose(t, req(), LocalLoad()) == A


def test_a_session_keeps_its_node_when_its_prefix_changes() -> None:
    router, t = FastestRouter(), table(node(A), node(B))
    turn1 = prefix_keys_for_messages([("system", "billing: 1"), ("user", "fix the bug")])
    router.record(req(keys=with_session(turn1, "s-1")), B)
    # The next turn's first message changed (a volatile line): no prefix of it is known.
    turn2 = prefix_keys_for_messages([("system", "billing: 2"), ("user", "fix the bug")])
    load = LocalLoad()
    load.start(B, 40)
    assert router.choose(t, req(keys=with_session(turn2, "s-1")), load) == B
    assert router.choose(t, req(keys=with_session(turn2, "s-2")), load) == A  # another session
    assert router.choose(t, req(keys=turn2), load) == A


def test_a_session_comes_from_a_header_or_else_from_the_body() -> None:
    assert session_id({"x-claude-code-session-id": "cc", "session-id": "codex"}, "key") == "cc"
    assert session_id({"session-id": "codex"}, "key") == "codex"
    assert session_id({}, None, "", "prompt-cache-key", "user") == "prompt-cache-key"
    assert session_id({}, None, 3) is None
    assert with_session((1, 2), None) == (1, 2)
    assert with_session((1, 2), "s")[1:] == (1, 2) and with_session((), "s") != with_session(
        (), "t"
    )
