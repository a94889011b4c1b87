"""`cluster alias`, `cluster alias rm` and `cluster aliases`: the admin calls they make and what
they print."""

from __future__ import annotations

from typing import Any

import pytest

from cluster.cli import aliases
from cluster.cli.main import build_parser, main

GPT = {"name": "gpt-*", "model": "demo", "glob": True}


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str, Any]]:
    """The admin calls the commands make; each answers like the admin API."""
    made: list[tuple[str, str, Any]] = []

    def admin_get(url: str, path: str, body: Any = None, *, method: str | None = None) -> Any:
        made.append((method or "GET", path, body))
        if method == "PUT":
            return {**GPT, "model": body["model"], "served": body["model"] == "demo"}
        if method == "DELETE":
            return {**GPT, "removed": True}
        return {"aliases": [{"name": "claude-haiku", "model": "demo", "glob": False}, GPT]}

    monkeypatch.setattr(aliases, "admin_get", admin_get)
    return made


def test_alias_puts_the_quoted_name(
    calls: list[tuple[str, str, Any]], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["alias", "gpt-*", "demo"]) == 0
    assert calls == [("PUT", "/admin/aliases/gpt-%2A", {"model": "demo"})]
    assert capsys.readouterr().out == "alias gpt-* -> demo (glob)\n"
    assert main(["alias", "gpt-*", "later"]) == 0
    assert "nothing serves later now" in capsys.readouterr().out


def test_alias_rm_deletes(
    calls: list[tuple[str, str, Any]], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["alias", "rm", "claude-[a-z]*"]) == 0
    assert calls == [("DELETE", "/admin/aliases/claude-%5Ba-z%5D%2A", None)]
    assert capsys.readouterr().out == "removed alias gpt-* -> demo (glob)\n"


def test_aliases_lists_a_table_or_json(
    calls: list[tuple[str, str, Any]], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["aliases"]) == 0
    assert capsys.readouterr().out.splitlines() == [
        "NAME          KIND   MODEL",
        "claude-haiku  exact  demo",
        "gpt-*         glob   demo",
    ]
    assert main(["aliases", "--json"]) == 0
    assert '"claude-haiku"' in capsys.readouterr().out
    assert aliases.aliases_table([]).startswith("no aliases")


def test_a_missing_model_is_one_readable_line(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(["alias", "gpt-*"])
    assert "required: MODEL" in capsys.readouterr().err
    assert main(["alias", "gpt-*", " "]) == 1
    assert capsys.readouterr().err == "cluster: which model? cluster alias NAME MODEL\n"


def test_help_explains_globs_with_examples(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(["alias", "--help"])
    out = capsys.readouterr().out
    assert "cluster alias 'claude-*-haiku*' small-model" in out and "Claude Code" in out
    assert "rm NAME" in out
