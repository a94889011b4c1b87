"""Model aliases end to end: made with the CLI, used by the official OpenAI and Anthropic SDKs
under the names Codex and Claude Code ask for, listed, recorded, and removed."""

from __future__ import annotations

import json
from pathlib import Path

import anthropic
import httpx
import openai
import pytest

from tests.harness import AgentProcess, ClusterProcess, cli, cluster_of, share_models, wait_for

pytestmark = pytest.mark.timeout(600)


def test_aliases_reach_demo_from_gpt_and_claude_names(tmp_path: Path, demo_model_dir: Path) -> None:
    agent = AgentProcess(
        share_models(tmp_path / "agent", demo_model_dir.parent),
        name="node",
        args=("--model", "demo", "--no-mdns"),
    ).start()
    try:
        cluster = cluster_of(tmp_path, agent)
        try:
            _check_aliases(cluster)
        finally:
            cluster.stop()
    finally:
        agent.stop()


def _check_aliases(cluster: ClusterProcess) -> None:
    for name in ("gpt-*", "claude-haiku"):
        made = cli(cluster, "alias", name, "demo")
        assert made.returncode == 0 and "-> demo" in made.stdout, made.stderr
    bad = cli(cluster, "alias", "codex", "claude-haiku")  # a chain: refused, one line
    assert bad.returncode == 1 and "itself an alias" in bad.stderr
    listed = json.loads(cli(cluster, "aliases", "--json").stdout)["aliases"]
    assert [(a["name"], a["glob"]) for a in listed] == [("claude-haiku", False), ("gpt-*", True)]
    wait_for(  # the controller's push reaches the gateway
        lambda: "claude-haiku" in _model_ids(cluster), 10, "the gateway to list the alias"
    )

    oai = openai.OpenAI(base_url=f"{cluster.url}/v1", api_key="unused", max_retries=0)
    chat = oai.chat.completions.create(
        model="gpt-5-codex", messages=[{"role": "user", "content": "hi"}], max_tokens=4
    )
    assert chat.model == "gpt-5-codex" and chat.choices[0].message.content is not None
    claude = anthropic.Anthropic(base_url=cluster.url, api_key="unused", max_retries=0)
    message = claude.messages.create(
        model="claude-haiku",
        max_tokens=4,
        messages=[{"role": "user", "content": "hi"}],
        extra_body={"temperature": 0},
    )
    assert message.model == "claude-haiku" and message.content

    card = next(m for m in oai.models.list().data if m.id == "claude-haiku")
    assert card.model_extra and card.model_extra["alias_of"] == "demo"
    assert "claude-haiku" in [m.id for m in claude.models.list().data]

    def recorded() -> list[str]:
        usage = json.loads(cli(cluster, "usage", "--json").stdout)
        return next(g["requested_as"] for g in usage["groups"] if g["model"] == "demo")

    wait_for(lambda: recorded() == ["claude-haiku", "gpt-5-codex"], 15, "the ledger's rows")

    removed = cli(cluster, "alias", "rm", "gpt-*")
    assert removed.returncode == 0, removed.stderr
    wait_for(lambda: _status(cluster, "gpt-5-codex") == 404, 10, "gpt-* to be forgotten")
    assert _status(cluster, "claude-haiku") == 200


def _model_ids(cluster: ClusterProcess) -> list[str]:
    return [m["id"] for m in httpx.get(f"{cluster.url}/v1/models", timeout=5).json()["data"]]


def _status(cluster: ClusterProcess, model: str) -> int:
    body = {"model": model, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
    return httpx.post(f"{cluster.url}/v1/chat/completions", json=body, timeout=30).status_code
