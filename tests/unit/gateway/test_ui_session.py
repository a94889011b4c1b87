"""The dashboard's session cookie and CSRF token: who gets in, for how long, and from where."""

from __future__ import annotations

from cluster.gateway.ui.session import LIFETIME_S, Sessions, same_origin

NOW = 1_800_000_000.0


def test_a_session_is_valid_until_it_expires() -> None:
    s = Sessions.derived("digest", b"secret")
    session = s.issue(NOW)
    assert s.valid(session, NOW)
    assert s.valid(session, NOW + LIFETIME_S - 1)
    assert not s.valid(session, NOW + LIFETIME_S + 1)


def test_a_session_from_another_key_or_tampered_is_refused() -> None:
    mine, other = Sessions.derived("digest", b"secret"), Sessions.derived("other", b"secret")
    session = mine.issue(NOW)
    expires, nonce, signature = session.split(".")
    assert not other.valid(session, NOW)  # a new admin token ends every session
    assert not mine.valid(f"{int(expires) + 3600}.{nonce}.{signature}", NOW)
    for junk in (None, "", "a.b", "a.b.c.d", f"x.{nonce}.{signature}"):
        assert not mine.valid(junk, NOW)


def test_replicas_of_one_cluster_accept_each_others_sessions() -> None:
    a, b = Sessions.derived("digest", b"secret"), Sessions.derived("digest", b"secret")
    session = a.issue(NOW)
    assert b.valid(session, NOW)
    assert b.csrf_ok(session, a.csrf(session))


def test_the_csrf_token_belongs_to_its_session() -> None:
    s = Sessions.derived("digest")
    first, second = s.issue(NOW), s.issue(NOW)
    assert s.csrf_ok(first, s.csrf(first))
    assert not s.csrf_ok(first, s.csrf(second))
    assert not s.csrf_ok(first, None)
    assert not s.csrf_ok(first, "")


def test_same_origin_compares_the_origin_with_the_host() -> None:
    assert same_origin(None, "head:8000")  # not a cross-site browser request
    assert same_origin("http://head:8000", "head:8000")
    assert same_origin("https://HEAD:8000", "head:8000")
    assert not same_origin("http://evil.example", "head:8000")
    assert not same_origin("http://head:8001", "head:8000")
    assert not same_origin("null", "head:8000")


def test_without_an_admin_token_no_session_is_valid() -> None:
    s = Sessions.derived("", b"secret")
    assert not s.valid(s.issue(NOW), NOW)
