"""What the CLI prints outside its tables shows the head's values literally too: a key, node,
model or alias name, or an error message, holding escape sequences or Rich markup."""

from __future__ import annotations

from typing import Any

import pytest

from cluster.cli import aliases, deploy, keys
from cluster.cli.admin_client import CliError
from cluster.cli.main import main

HOSTILE = "[bold]x[/bold]\x1b]0;pwned\x07\x1b[2J\u202e"
SHOWN = "[bold]x[/bold]\\x1b]0;pwned\\x07\\x1b[2J\\u202e"
KEY = {
    "key": "mk-" + HOSTILE,
    "key_id": HOSTILE,
    "name": HOSTILE,
    "models": [HOSTILE],
    "max_concurrent": 0,
    "revoked_at": None,
    "created_at": 0,
}
NODE = {"node": {"name": HOSTILE, "state": HOSTILE}}
ALIAS = {"name": HOSTILE, "model": HOSTILE, "glob": False, "served": False}


def answering(monkeypatch: pytest.MonkeyPatch, answer: Any) -> None:
    """Every admin call of the keys, alias and node commands gets `answer`."""

    def admin_get(*args: Any, **kwargs: Any) -> Any:
        return answer

    for module in (keys, aliases, deploy):
        monkeypatch.setattr(module, "admin_get", admin_get)


def printed(capsys: pytest.CaptureFixture[str]) -> str:
    """Everything printed since the last call, which must hold no control character."""
    got = capsys.readouterr()
    out = got.out + got.err
    assert "\x1b" not in out and "\x07" not in out and "\u202e" not in out
    return out


@pytest.mark.parametrize(
    ("argv", "answer", "times"),
    [
        (["keys", "create", "k"], KEY, 4),  # the secret, its id, its name, its model
        (["keys", "list"], {"keys": [KEY]}, 3),
        (["keys", "revoke", "k"], KEY, 2),
        (["alias", "a", "m"], ALIAS, 3),  # the alias, and the model nothing serves
        (["aliases"], {"aliases": [ALIAS]}, 2),
        (["alias", "rm", "a"], ALIAS, 2),
        (["uncordon", "n"], NODE, 2),
        (["drain", "n", "--no-wait"], NODE, 1),
    ],
)
def test_the_heads_values_are_printed_literally(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    argv: list[str],
    answer: Any,
    times: int,
) -> None:
    answering(monkeypatch, answer)
    assert main([*argv, "--url", "http://127.0.0.1:1"]) == 0
    assert printed(capsys).count(SHOWN) == times


def test_an_error_from_the_head_is_one_literal_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def admin_get(*args: Any, **kwargs: Any) -> Any:
        raise CliError(f"http://head/admin/keys: 400 no key named {HOSTILE}\nforged line")

    monkeypatch.setattr(keys, "admin_get", admin_get)
    assert main(["keys", "revoke", "k", "--url", "http://127.0.0.1:1"]) == 1
    out = printed(capsys)
    assert out.count("\n") == 1 and SHOWN in out and "\\x0aforged line" in out
