"""The keys file and the controller's key table (access/key_store.py), on a real SQLite file."""

from __future__ import annotations

import asyncio
import sqlite3
import stat
from pathlib import Path

import pytest

from cluster.access import admin_token
from cluster.access.key_store import KeyRegistry, parse_key_request
from cluster.access.keys import authorize, digest, parse_key
from cluster.errors import InvalidRequest, NotFound


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


async def test_create_stores_only_the_hash_in_an_owner_only_file(tmp_path: Path) -> None:
    reg = KeyRegistry(tmp_path / "keys.sqlite3", clock=lambda: 100.0)
    await reg.open()
    record, key = await reg.create("alice", ("demo",), 2)
    await reg.close()
    assert mode(tmp_path / "keys.sqlite3") == 0o600
    parsed = parse_key(key)
    assert parsed is not None and parsed[0] == record.key_id
    raw = (tmp_path / "keys.sqlite3").read_bytes()
    assert parsed[1].encode() not in raw and digest(parsed[1]).encode() in raw
    again = KeyRegistry(tmp_path / "keys.sqlite3")
    await again.open()
    assert again.table().keys[record.key_id] == record  # survives a restart
    grant = authorize(again.table(), key, model="demo", inflight={}, required=True)
    assert grant.key_id == record.key_id


async def test_names_are_unique_among_live_keys_and_revoke_frees_them(tmp_path: Path) -> None:
    reg = KeyRegistry(tmp_path / "keys.sqlite3", clock=lambda: 5.0)
    await reg.open()
    first, _ = await reg.create("ci", (), None)
    with pytest.raises(InvalidRequest, match="exists already"):
        await reg.create("ci", (), None)
    revoked = await reg.revoke("ci")
    assert revoked.key_id == first.key_id and revoked.revoked_at == 5.0
    with pytest.raises(NotFound):
        await reg.revoke("ci")
    second, _ = await reg.create("ci", (), None)
    assert second.key_id != first.key_id and reg.table().active == 1


async def test_a_change_wakes_the_long_poll_at_once(tmp_path: Path) -> None:
    reg = KeyRegistry(":memory:")
    await reg.open()
    version = reg.table().version
    waiting = asyncio.create_task(reg.wait_table(version, timeout_s=10))
    await asyncio.sleep(0.05)
    assert not waiting.done()
    await reg.create("alice", (), None)
    table = await asyncio.wait_for(waiting, 1.0)
    assert table.version > version and table.active == 1


async def test_a_restarted_store_never_repeats_a_version(tmp_path: Path) -> None:
    clock = iter([1.0, 2.0])
    a = KeyRegistry(":memory:", clock=lambda: next(clock))
    b = KeyRegistry(":memory:", clock=lambda: next(clock))
    await a.open()
    await b.open()
    assert a.table().version != b.table().version


@pytest.mark.parametrize(
    "body, param",
    [
        (b"{", None),
        (b"[]", None),
        (b'{"name": "a b"}', "name"),
        (b'{"name": ""}', "name"),
        (b'{"name": "a", "models": "demo"}', "models"),
        (b'{"name": "a", "models": ["a,b"]}', "models"),
        (b'{"name": "a", "max_concurrent": 0}', "max_concurrent"),
        (b'{"name": "a", "max_concurrent": true}', "max_concurrent"),
        (b'{"name": "a", "local_only": 1}', "local_only"),
    ],
)
def test_bad_create_requests_are_400_naming_the_field(body: bytes, param: str | None) -> None:
    with pytest.raises(InvalidRequest) as err:
        parse_key_request(body)
    assert err.value.param == param


def test_a_good_create_request() -> None:
    body = b'{"name": "ci-bot", "models": ["demo", "demo", "x"], "max_concurrent": 3}'
    assert parse_key_request(body) == ("ci-bot", ("demo", "x"), 3, False)
    assert parse_key_request(b'{"name": "a"}') == ("a", (), None, False)
    assert parse_key_request(b'{"name": "a", "local_only": true}') == ("a", (), None, True)


def test_the_admin_token_is_made_once_owner_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "config"
    token, path = admin_token.ensure(config)
    assert token.startswith("mla-") and len(token) > 40
    assert mode(path) == 0o600 and mode(config) == 0o700
    path.chmod(0o644)
    again, _ = admin_token.ensure(config)
    assert again == token and mode(path) == 0o600  # kept, and made private again
    monkeypatch.setenv("METERLESS_CONFIG_DIR", str(config))
    monkeypatch.delenv(admin_token.ENV, raising=False)
    assert admin_token.for_cli() == token
    monkeypatch.setenv(admin_token.ENV, "mla-from-env")
    assert admin_token.for_cli() == "mla-from-env"


async def test_a_local_only_key_stays_local_only_after_a_restart(tmp_path: Path) -> None:
    reg = KeyRegistry(tmp_path / "keys.sqlite3")
    await reg.open()
    local, _ = await reg.create("private", (), None, local_only=True)
    anywhere, _ = await reg.create("ci", (), None)
    await reg.close()
    again = KeyRegistry(tmp_path / "keys.sqlite3")
    await again.open()
    keys = again.table().keys
    assert keys[local.key_id].local_only and not keys[anywhere.key_id].local_only
    assert keys[local.key_id].public()["local_only"] is True


async def test_a_keys_file_from_before_local_only_keys_is_brought_up_to_date(
    tmp_path: Path,
) -> None:
    path = tmp_path / "keys.sqlite3"
    old = sqlite3.connect(path)
    old.executescript(
        "CREATE TABLE api_keys (key_id TEXT PRIMARY KEY, name TEXT NOT NULL, digest TEXT NOT "
        "NULL, models TEXT NOT NULL, max_concurrent INTEGER, created_at REAL NOT NULL, "
        "revoked_at REAL);"
        "INSERT INTO api_keys VALUES ('0123456789ab', 'old', 'd', '', NULL, 1.0, NULL);"
    )
    old.close()
    reg = KeyRegistry(path)
    await reg.open()
    assert reg.table().keys["0123456789ab"].local_only is False
    made, _ = await reg.create("new", (), None, local_only=True)
    assert reg.table().keys[made.key_id].local_only
    await reg.close()
