"""`cluster providers [add|rm]`: what they store in the config dir and print, never the key."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from cluster.cli.main import main
from cluster.providers import store

KEY = "sk-test-0123456789abcdef"


@pytest.fixture
def cfg(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A config dir of the test's own, and a key file and variable holding KEY."""
    monkeypatch.setenv("METERLESS_CONFIG_DIR", str(tmp_path / "cfg"))
    monkeypatch.setenv("TEST_PROVIDER_KEY", KEY)
    (tmp_path / "key").write_text(KEY + "\n")
    return tmp_path / "cfg"


def test_add_list_rm(cfg: Path, capsys: pytest.CaptureFixture[str]) -> None:
    add = ["providers", "add", "oa", "--kind", "openai", "--base-url", "http://h:1/v1/"]
    assert main([*add, "--key-env", "TEST_PROVIDER_KEY", "--price", "m=0.15,0.6,0.075"]) == 0
    assert capsys.readouterr().out == "provider oa (openai) at http://h:1/v1\n"
    assert store.key(cfg, "oa") == KEY
    assert stat.S_IMODE((cfg / store.KEYS_DIR / "oa").stat().st_mode) == 0o600
    assert main(["providers"]) == 0
    assert capsys.readouterr().out.splitlines()[1:] == [
        "oa    openai  set      http://h:1/v1",
        "                       m=0.15,0.6,0.075",
    ]
    assert main(["providers", "--json"]) == 0
    (listed,) = json.loads(capsys.readouterr().out)["providers"]
    assert listed["key_set"] is True and listed["prices"]["m"]["cached_input"] == "0.075"
    assert main(["providers", "rm", "oa"]) == 0
    assert capsys.readouterr().out == "removed provider oa (openai) at http://h:1/v1\n"
    assert not store.has_key(cfg, "oa")


def test_the_key_is_never_printed(cfg: Path, capsys: pytest.CaptureFixture[str]) -> None:
    key_file = str(cfg.parent / "key")
    add = ["providers", "add", "an", "--kind", "anthropic", "--base-url", "https://a"]
    for argv in ([*add, "--key-file", key_file, "--json"], ["providers"], ["providers", "--json"]):
        assert main(argv) == 0
    assert main(["providers", "rm", "an", "--json"]) == 0
    out, err = capsys.readouterr()
    assert KEY not in out + err and '"key_set": true' in out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--kind", "azure"], "cluster: unknown kind 'azure'; known: openai, anthropic\n"),
        (["--base-url", "api.example.com"], "cluster: bad base URL 'api.example.com'"),
        (["--price", "m=1"], "cluster: bad price 'm=1': give MODEL=IN,OUT[,CACHED]"),
        (["--key-file", "/nonexistent/key"], "cluster: no key file at /nonexistent/key\n"),
        (["--key-env", "NO_SUCH_VAR_HERE"], "cluster: $NO_SUCH_VAR_HERE is not set"),
    ],
)
def test_bad_input_is_one_line(
    cfg: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    given = dict(zip(args[::2], args[1::2], strict=True))
    defaults = {"--kind": "openai", "--base-url": "http://h", "--key-env": "TEST_PROVIDER_KEY"}
    if "--key-file" in given:
        del defaults["--key-env"]
    flags = [x for k, v in {**defaults, **given}.items() for x in (k, v)]
    assert main(["providers", "add", "p", *flags]) == 1
    err = capsys.readouterr().err
    assert err.startswith(message) and err.count("\n") == 1
    assert store.load(cfg) == []


def test_rm_of_an_unknown_provider_lists_the_known(
    cfg: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["providers", "rm", "nope"]) == 1
    assert capsys.readouterr().err == "cluster: no provider named 'nope'; providers: none\n"


def test_route_to_a_provider(cfg: Path, capsys: pytest.CaptureFixture[str]) -> None:
    add = ["providers", "add", "oa", "--kind", "openai", "--base-url", "http://h/v1"]
    assert main([*add, "--key-env", "TEST_PROVIDER_KEY"]) == 0
    assert main(["route", "gpt-x", "--to", "oa:demo"]) == 0
    assert main(["routes"]) == 0
    assert main(["route", "rm", "gpt-x"]) == 0
    assert capsys.readouterr().out.splitlines()[1:] == [
        "route gpt-x -> oa:demo",
        "gpt-x -> oa:demo",
        "removed route gpt-x -> oa:demo",
    ]
    assert main(["route", "gpt-x"]) == 1
    assert "cluster route MODEL --to PROVIDER" in capsys.readouterr().err


def test_overflow_to_a_provider(cfg: Path, capsys: pytest.CaptureFixture[str]) -> None:
    add = ["providers", "add", "oa", "--kind", "openai", "--base-url", "http://h/v1"]
    assert main([*add, "--key-env", "TEST_PROVIDER_KEY"]) == 0
    assert main(["route", "demo", "--overflow", "oa:gpt-x", "--overflow-wait", "0.5"]) == 0
    assert main(["routes", "--json"]) == 0
    assert main(["route", "rm", "demo"]) == 0
    out = capsys.readouterr().out
    assert "route demo overflows after 0.5s -> oa:gpt-x" in out
    assert '"overflow_wait_s": 0.5' in out and "removed route demo overflows" in out
    assert main(["route", "demo", "--to", "oa", "--overflow", "oa"]) == 1
    assert "--overflow PROVIDER" in capsys.readouterr().err
