"""The planner with fixtures: loads, one per node, backoff, crash loop, moves that drop nothing."""

from __future__ import annotations

from cluster.deployments.placement import DeploymentSpec
from cluster.deployments.reconcile import (
    Failure,
    Load,
    Observed,
    ObservedNode,
    ReconcileSettings,
    Unload,
    Withdraw,
    backoff_s,
    plan,
)

S = ReconcileSettings(
    backoff_min_s=1.0, backoff_max_s=8.0, crash_loop_after=3, withdraw_grace_s=2.0
)
QWEN = DeploymentSpec(name="qwen", model="org/qwen", replicas=2)
LLAMA = DeploymentSpec(name="llama", model="org/llama")


def nodes(**loaded: set[str]) -> dict[str, ObservedNode]:
    return {
        n: ObservedNode(node_id=n, reachable=True, loaded=frozenset(m), serving=frozenset(m))
        for n, m in loaded.items()
    }


def test_loads_what_is_assigned_and_not_loaded() -> None:
    obs = Observed(now=0, nodes=nodes(a=set(), b={"qwen"}))
    assert plan([QWEN], {"qwen": ["a", "b"]}, obs, S) == [Load(node_id="a", spec=QWEN)]


def test_nothing_to_do_when_observed_matches() -> None:
    obs = Observed(now=0, nodes=nodes(a={"qwen"}, b={"qwen"}))
    assert plan([QWEN], {"qwen": ["a", "b"]}, obs, S) == []


def test_one_load_per_node_at_a_time() -> None:
    obs = Observed(now=0, nodes=nodes(a=set()))
    actions = plan([QWEN, LLAMA], {"qwen": ["a"], "llama": ["a"]}, obs, S)
    assert actions == [Load(node_id="a", spec=LLAMA)]
    loading = Observed(now=0, nodes=nodes(a=set()), loading=frozenset({("a", "llama")}))
    assert plan([QWEN, LLAMA], {"qwen": ["a"], "llama": ["a"]}, loading, S) == []


def test_unreachable_nodes_are_asked_nothing() -> None:
    obs = Observed(now=0, nodes={"a": ObservedNode(node_id="a", reachable=False)})
    assert plan([QWEN], {"qwen": ["a"]}, obs, S) == []


def test_backoff_doubles_per_failure_up_to_the_ceiling() -> None:
    assert [backoff_s(n, S) for n in (1, 2, 3, 4, 5)] == [1.0, 2.0, 4.0, 8.0, 8.0]
    fail = {("a", "qwen"): Failure(count=2, last_at=10.0, reason="out of memory")}
    early = Observed(now=11.9, nodes=nodes(a=set()), failures=fail)
    assert plan([QWEN], {"qwen": ["a"]}, early, S) == []
    later = Observed(now=12.0, nodes=nodes(a=set()), failures=fail)
    assert plan([QWEN], {"qwen": ["a"]}, later, S) == [Load(node_id="a", spec=QWEN)]


def test_backoff_is_per_node_and_model() -> None:
    fail = {("a", "qwen"): Failure(count=1, last_at=10.0, reason="x")}
    obs = Observed(now=10.5, nodes=nodes(a=set(), b=set()), failures=fail)
    assert plan([QWEN], {"qwen": ["a", "b"]}, obs, S) == [Load(node_id="b", spec=QWEN)]


def test_a_crash_loop_stops_trying() -> None:
    fail = {("a", "qwen"): Failure(count=3, last_at=0.0, reason="segfault")}
    obs = Observed(now=1e6, nodes=nodes(a=set()), failures=fail)
    assert plan([QWEN], {"qwen": ["a"]}, obs, S) == []


def test_a_move_loads_the_new_replica_before_touching_the_old() -> None:
    one = DeploymentSpec(name="qwen", model="org/qwen")
    obs = Observed(now=0, nodes=nodes(old={"qwen"}, new=set()))
    assert plan([one], {"qwen": ["new"]}, obs, S) == [Load(node_id="new", spec=one)]
    loading = Observed(
        now=0, nodes=nodes(old={"qwen"}, new=set()), loading=frozenset({("new", "qwen")})
    )
    assert plan([one], {"qwen": ["new"]}, loading, S) == []


def test_once_replaced_the_old_replica_is_withdrawn_then_unloaded_when_idle() -> None:
    one = DeploymentSpec(name="qwen", model="org/qwen")
    ready = nodes(old={"qwen"}, new={"qwen"})
    assert plan([one], {"qwen": ["new"]}, Observed(now=0, nodes=ready), S) == [
        Withdraw(node_id="old", model="qwen")
    ]
    withdrawn = {("old", "qwen"): 10.0}
    # Within the grace, gateways may not have the new table yet: wait.
    assert (
        plan([one], {"qwen": ["new"]}, Observed(now=11, nodes=ready, withdrawn=withdrawn), S) == []
    )
    busy = {
        **ready,
        "old": ObservedNode(
            node_id="old",
            reachable=True,
            loaded=frozenset({"qwen"}),
            serving=frozenset({"qwen"}),
            busy={"qwen": 2},
        ),
    }
    assert (
        plan([one], {"qwen": ["new"]}, Observed(now=20, nodes=busy, withdrawn=withdrawn), S) == []
    )
    assert plan(
        [one], {"qwen": ["new"]}, Observed(now=20, nodes=ready, withdrawn=withdrawn), S
    ) == [Unload(node_id="old", model="qwen")]


def test_undeploy_unloads_every_replica() -> None:
    gone = DeploymentSpec(name="qwen", model="org/qwen", replicas=0)
    obs = Observed(now=5, nodes=nodes(a={"qwen"}, b={"qwen"}), withdrawn={("a", "qwen"): 0.0})
    assert plan([gone], {}, obs, S) == [
        Unload(node_id="a", model="qwen"),
        Withdraw(node_id="b", model="qwen"),
    ]


def test_models_without_a_spec_are_left_alone() -> None:
    obs = Observed(now=0, nodes=nodes(a={"demo"}))
    assert plan([QWEN], {"qwen": ["a"]}, obs, S) == [Load(node_id="a", spec=QWEN)]


def test_the_old_replica_keeps_serving_until_the_new_one_is_routable() -> None:
    one = DeploymentSpec(name="qwen", model="org/qwen")
    # Loaded (the load answered) but not yet in the routing table: nothing to withdraw yet.
    just_loaded = {
        **nodes(old={"qwen"}),
        "new": ObservedNode(node_id="new", reachable=True, loaded=frozenset({"qwen"})),
    }
    assert plan([one], {"qwen": ["new"]}, Observed(now=0, nodes=just_loaded), S) == []
