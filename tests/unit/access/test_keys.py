"""API keys: format, hashing, and the pure decision of who may do what (cluster/access/keys.py)."""

from __future__ import annotations

import pytest

from cluster.access.keys import (
    ID_HEX,
    SECRET_HEX,
    Grant,
    KeyRecord,
    KeyTable,
    admin_ok,
    authorize,
    bearer,
    check_rented,
    digest,
    format_key,
    new_key,
    parse_key,
    visible_models,
)
from cluster.errors import Forbidden, RateLimited, Unauthorized

RANDOM = "0123456789ab" + "f" * SECRET_HEX


def record(secret: str = "f" * SECRET_HEX, **kw: object) -> KeyRecord:
    fields: dict[str, object] = {
        "key_id": "0123456789ab",
        "name": "alice",
        "digest": digest(secret),
    }
    return KeyRecord(**{**fields, **kw})  # type: ignore[arg-type]


def table(*records: KeyRecord) -> KeyTable:
    return KeyTable.of(7, records)


def full_key() -> str:
    return format_key(*new_key(RANDOM))


def test_a_key_round_trips_and_its_digest_is_not_its_secret() -> None:
    key_id, secret = new_key(RANDOM)
    key = format_key(key_id, secret)
    assert key == f"ml-0123456789ab-{'f' * SECRET_HEX}"
    assert parse_key(key) == (key_id, secret)
    assert len(key_id) == ID_HEX and digest(secret) != secret and len(digest(secret)) == 64
    assert digest(secret) == digest(secret) != digest(secret[:-1] + "e")


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "ml-",
        "sk-abc",
        "ml-0123456789ab-" + "f" * (SECRET_HEX - 1),
        "ml-0123456789AB-" + "f" * SECRET_HEX,
        full_key() + "0",
        "xx-0123456789ab-" + "f" * SECRET_HEX,
    ],
)
def test_malformed_keys_do_not_parse(bad: str) -> None:
    assert parse_key(bad) is None


def test_new_key_wants_exactly_enough_hex() -> None:
    with pytest.raises(ValueError):
        new_key(RANDOM[:-1])
    with pytest.raises(ValueError):
        new_key(RANDOM[:-1] + "g")


def test_bearer_header() -> None:
    assert bearer("Bearer abc") == "abc"
    assert bearer("bearer  abc ") == "abc"
    assert bearer("Basic abc") is None
    assert bearer("Bearer ") is None
    assert bearer(None) is None


def test_admin_token_is_checked_by_digest() -> None:
    assert admin_ok("mla-secret", digest("mla-secret"))
    assert not admin_ok("mla-other", digest("mla-secret"))
    assert not admin_ok(None, digest("mla-secret"))
    assert not admin_ok("", "")  # no digest configured: nobody is admin


def test_a_valid_key_is_granted_and_named_for_the_ledger() -> None:
    grant = authorize(table(record()), full_key(), model="demo", inflight={}, required=True)
    assert grant.key_id == "0123456789ab"


@pytest.mark.parametrize(
    "presented",
    [
        None,
        "sk-whatever",
        "ml-ffffffffffff-" + "f" * SECRET_HEX,
        "ml-0123456789ab-" + "e" * SECRET_HEX,
    ],
)
def test_no_unknown_or_wrong_key_is_401_when_keys_are_required(presented: str | None) -> None:
    with pytest.raises(Unauthorized) as err:
        authorize(table(record()), presented, model="demo", inflight={}, required=True)
    assert err.value.status == 401 and err.value.body()["error"]["code"] == "invalid_api_key"


def test_a_revoked_key_is_401_and_says_so() -> None:
    t = table(record(revoked_at=5.0), record(key_id="aaaaaaaaaaaa", name="bob"))
    with pytest.raises(Unauthorized, match="revoked"):
        authorize(t, full_key(), model="demo", inflight={}, required=True)


def test_with_no_key_made_yet_the_401_says_how_to_make_one() -> None:
    with pytest.raises(Unauthorized, match="cluster keys create"):
        authorize(table(), None, model="demo", inflight={}, required=True)
    with pytest.raises(Unauthorized, match="cluster keys create"):  # revoked ones do not count
        authorize(table(record(revoked_at=1.0)), None, model="demo", inflight={}, required=True)


def test_a_model_outside_the_keys_list_is_403() -> None:
    t = table(record(models=("small",)))
    assert authorize(t, full_key(), model="small", inflight={}, required=True).key is not None
    with pytest.raises(Forbidden) as err:
        authorize(t, full_key(), model="demo", inflight={}, required=True)
    assert err.value.status == 403 and err.value.param == "model"


def test_over_its_concurrency_a_key_gets_429_with_retry_after() -> None:
    t = table(record(max_concurrent=2))
    below = authorize(t, full_key(), model="demo", inflight={"0123456789ab": 1}, required=True)
    assert below.key_id == "0123456789ab"
    with pytest.raises(RateLimited) as err:
        authorize(t, full_key(), model="demo", inflight={"0123456789ab": 2}, required=True)
    assert err.value.status == 429 and err.value.headers()["Retry-After"] == "1"
    # Another key's requests do not count against this one.
    other = authorize(t, full_key(), model="demo", inflight={"aaaaaaaaaaaa": 9}, required=True)
    assert other.key_id == "0123456789ab"


def test_the_model_is_checked_before_the_concurrency() -> None:
    t = table(record(models=("small",), max_concurrent=1))
    with pytest.raises(Forbidden):
        authorize(t, full_key(), model="demo", inflight={"0123456789ab": 1}, required=True)


def test_an_open_endpoint_lets_unknown_keys_in_but_still_enforces_a_valid_one() -> None:
    t = table(record(models=("small",), max_concurrent=1))
    assert authorize(t, None, model="demo", inflight={}, required=False) == Grant()
    assert authorize(t, "unused", model="demo", inflight={}, required=False) == Grant()
    revoked = table(record(revoked_at=1.0))
    assert authorize(revoked, full_key(), model="demo", inflight={}, required=False) == Grant()
    with pytest.raises(Forbidden):
        authorize(t, full_key(), model="demo", inflight={}, required=False)
    with pytest.raises(RateLimited):
        authorize(t, full_key(), model="small", inflight={"0123456789ab": 1}, required=False)


def test_models_listed_are_those_the_key_may_use() -> None:
    models = ["demo", "small", "big"]
    assert visible_models(Grant(), models) == models
    assert visible_models(Grant(record(models=("small", "big"))), models) == ["small", "big"]
    assert visible_models(Grant(record()), models) == models


def test_a_local_only_key_may_not_use_a_rented_model() -> None:
    grant = Grant(record(local_only=True))
    with pytest.raises(Forbidden) as err:
        check_rented(grant, model="gpt-x", provider="cloud", local_only=False)
    assert err.value.code == "local_only" and err.value.status == 403
    assert "0123456789ab is local-only; gpt-x is served by provider cloud" in str(err.value)


def test_on_a_local_only_cluster_no_request_may_use_a_rented_model() -> None:
    for grant in (Grant(record()), Grant()):
        with pytest.raises(Forbidden, match="cluster is local-only; gpt-x is served by"):
            check_rented(grant, model="gpt-x", provider="cloud", local_only=True)


def test_other_keys_may_use_a_rented_model() -> None:
    check_rented(Grant(record()), model="gpt-x", provider="cloud", local_only=False)
    check_rented(Grant(), model="gpt-x", provider="cloud", local_only=False)
