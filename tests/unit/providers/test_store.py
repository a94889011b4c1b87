"""Providers on disk: the list apart from the keys, each key owner-only, replaced whole."""

from __future__ import annotations

import stat
from fractions import Fraction as F
from pathlib import Path

import pytest

from cluster.ledger.cost import Price
from cluster.providers import store
from cluster.providers.specs import Provider, ProviderError, Route, parse_target

OA = Provider(
    name="oa", kind="openai", base_url="http://h/v1", prices={"m": Price(input=F(1), output=F(2))}
)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_a_provider_is_stored_with_its_key_owner_only(tmp_path: Path) -> None:
    cfg = tmp_path / "cfg"
    assert store.load(cfg) == []
    store.put(cfg, OA, "sk-one")
    assert store.load(cfg) == [OA]
    assert store.has_key(cfg, "oa") and store.key(cfg, "oa") == "sk-one"
    assert _mode(cfg) == 0o700 and _mode(cfg / store.KEYS_DIR) == 0o700
    assert _mode(cfg / store.KEYS_DIR / "oa") == 0o600
    assert "sk-one" not in (cfg / store.FILE_NAME).read_text()
    assert sorted(p.name for p in cfg.iterdir()) == sorted([store.FILE_NAME, store.KEYS_DIR])


def test_adding_again_replaces_provider_and_key(tmp_path: Path) -> None:
    store.put(tmp_path, OA, "sk-one")
    other = Provider(name="an", kind="anthropic", base_url="https://a")
    store.put(tmp_path, other, "sk-two")
    moved = Provider(name="oa", kind="openai", base_url="http://elsewhere")
    store.put(tmp_path, moved, "sk-three")
    assert store.load(tmp_path) == [other, moved]
    assert store.key(tmp_path, "oa") == "sk-three"
    assert not list((tmp_path / store.KEYS_DIR).glob(".*"))  # no temporary file left behind


def test_removing_deletes_the_key(tmp_path: Path) -> None:
    store.put(tmp_path, OA, "sk-one")
    assert store.remove(tmp_path, "oa") == OA
    assert store.load(tmp_path) == [] and not store.has_key(tmp_path, "oa")
    with pytest.raises(ProviderError, match="no provider named 'oa'; providers: none"):
        store.remove(tmp_path, "oa")


def test_a_key_others_can_read_is_refused(tmp_path: Path) -> None:
    store.put(tmp_path, OA, "sk-one")
    (tmp_path / store.KEYS_DIR / "oa").chmod(0o644)
    with pytest.raises(ProviderError, match="open to other users"):
        store.key(tmp_path, "oa")


def test_a_malformed_file_is_one_line(tmp_path: Path) -> None:
    (tmp_path / store.FILE_NAME).write_text("{")
    with pytest.raises(ProviderError, match="is malformed"):
        store.load(tmp_path)


def test_routes_name_a_provider_and_keep_it(tmp_path: Path) -> None:
    with pytest.raises(ProviderError, match="no provider named 'oa'"):
        store.put_route(tmp_path, parse_target("m", "oa"))
    store.put(tmp_path, OA, "sk-one")
    store.put(tmp_path, Provider(name="an", kind="anthropic", base_url="https://a"), "sk-two")
    store.put_route(tmp_path, parse_target("m", "an"))
    assert store.routes(tmp_path) == [Route(model="m", provider="an", remote_model="m")]
    store.put_route(tmp_path, parse_target("m", "oa"))  # replaces the model's route
    store.put_route(tmp_path, parse_target("gpt-x", "oa:demo"))
    assert store.routes(tmp_path) == [
        Route(model="gpt-x", provider="oa", remote_model="demo"),
        Route(model="m", provider="oa", remote_model="m"),
    ]
    with pytest.raises(ProviderError, match="oa serves gpt-x, m; `cluster route rm` those first"):
        store.remove(tmp_path, "oa")
    assert store.remove_route(tmp_path, "m").remote_model == "m"
    with pytest.raises(ProviderError, match="no route for 'm'; routed models: gpt-x"):
        store.remove_route(tmp_path, "m")
