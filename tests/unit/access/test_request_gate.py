"""A gateway replica's door (access/request_gate.py): slots per key, readiness, the admin check."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from cluster.access.keys import KeyRecord, KeyTable, digest, format_key
from cluster.access.request_gate import RequestGate
from cluster.errors import Forbidden, NoCapacity, RateLimited, Unauthorized

KEY_ID, SECRET = "0123456789ab", "f" * 40
KEY = f"Bearer {format_key(KEY_ID, SECRET)}"


def gate(required: bool = True) -> RequestGate:
    g = RequestGate(keys_required=required, admin_digest=digest("mla-x"), metrics_open=False)
    g.table = KeyTable.of(
        1, [KeyRecord(key_id=KEY_ID, name="a", digest=digest(SECRET), max_concurrent=1)]
    )
    return g


async def events(fail: bool = False) -> AsyncIterator[int]:
    yield 1
    if fail:
        raise RuntimeError("node failed")
    yield 2


async def test_a_slot_is_held_until_the_stream_ends_however_it_ends() -> None:
    g = gate()
    for how in ("done", "closed", "failed"):
        grant = g.let_in(KEY, "demo")
        with pytest.raises(RateLimited):
            g.let_in(KEY, "demo")
        stream = g.hold(grant, events(fail=how == "failed"))
        assert await anext(stream) == 1
        if how == "done":
            assert [e async for e in stream] == [2]
        elif how == "closed":
            await stream.aclose()  # the client went away
        else:
            with pytest.raises(RuntimeError):
                await anext(stream)
        assert g.inflight == {}, how


async def test_requests_without_a_key_hold_no_slot_on_an_open_endpoint() -> None:
    g = gate(required=False)
    grant = g.let_in("Bearer unused", "demo")
    assert grant.key is None and g.inflight == {}
    stream = events()
    assert g.hold(grant, stream) is stream  # nothing to give back: no layer around it
    assert [e async for e in stream] == [1, 2]


def test_keys_required_and_no_table_yet_is_503_not_401() -> None:
    g = RequestGate(keys_required=True, admin_digest="", metrics_open=True)
    with pytest.raises(NoCapacity):
        g.let_in(KEY, "demo")
    open_gate = RequestGate(keys_required=False, admin_digest="", metrics_open=True)
    assert open_gate.let_in(None, "demo").key is None and open_gate.inflight == {}


def test_admin_and_metrics_need_the_admin_token() -> None:
    g = gate()
    g.admin("Bearer mla-x")
    for wrong in (None, "Bearer mla-y", KEY):
        with pytest.raises(Unauthorized):
            g.admin(wrong)
        with pytest.raises(Unauthorized):
            g.metrics(wrong)
    RequestGate(keys_required=True, admin_digest="", metrics_open=True).metrics(None)


def test_a_refused_rented_request_holds_no_slot() -> None:
    g = RequestGate(
        keys_required=True, admin_digest=digest("mla-x"), metrics_open=False, local_only=True
    )
    g.table = KeyTable.of(1, [KeyRecord(key_id=KEY_ID, name="a", digest=digest(SECRET))])
    with pytest.raises(Forbidden, match="cluster is local-only; gpt-x is served by provider c"):
        g.let_in(KEY, "gpt-x", "c")
    assert g.inflight == {}
    assert g.let_in(KEY, "demo").key_id == KEY_ID  # a local model is still served


def test_who_may_be_rented_for_a_local_only_key_or_cluster_is_nobody() -> None:
    g = gate(required=False)
    assert g.may_rent(g.let_in(None, "demo"))  # no key, on an open cluster
    local = KeyRecord(key_id=KEY_ID, name="a", digest=digest(SECRET), local_only=True)
    g.table = KeyTable.of(2, [local])
    assert not g.may_rent(g.let_in(KEY, "demo"))
    strict = RequestGate(keys_required=False, admin_digest="", metrics_open=True, local_only=True)
    assert not strict.may_rent(strict.let_in(None, "demo"))
