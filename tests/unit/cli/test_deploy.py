"""`cluster deploy`'s arguments as the deploy request body the admin API reads."""

from __future__ import annotations

from typing import Any

import pytest

from cluster.cli import deploy
from cluster.cli.main import build_parser


def test_tool_parser_goes_into_the_deploy_body(monkeypatch: pytest.MonkeyPatch) -> None:
    sent: list[dict[str, Any]] = []

    def admin_get(url: str, path: str, body: dict[str, Any]) -> dict[str, Any]:
        sent.append(body)
        return {"model": body["name"], "dry_run": False, "placement": [], "unplaced": []}

    monkeypatch.setattr(deploy, "admin_get", admin_get)
    for argv, parser in (([], ""), (["--tool-parser", "qwen3_coder"], "qwen3_coder")):
        args = build_parser().parse_args(["deploy", "demo", "--no-wait", *argv])
        assert args.func(args) == 0
        assert sent[-1]["tool_parser"] == parser
