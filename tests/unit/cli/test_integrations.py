"""`cluster integrations`: each guide is a configuration its client can read."""

from __future__ import annotations

import json
import tomllib

import pytest

from cluster.cli.integrations import CLIENTS, guides, render
from cluster.cli.main import main

URL = "http://10.0.0.2:8000"


def test_every_client_has_a_guide_on_the_endpoint() -> None:
    found = guides(URL, ["demo", "qwen"])
    assert tuple(found) == CLIENTS
    for guide in found.values():
        assert URL in render(guide, URL)


def test_claude_code_reaches_the_model_by_its_own_names() -> None:
    guide = guides(URL, ["demo"], key="mk-1")["claude-code"]
    assert guide.env["ANTHROPIC_BASE_URL"] == URL and guide.env["ANTHROPIC_AUTH_TOKEN"] == "mk-1"
    assert guide.env["ANTHROPIC_DEFAULT_HAIKU_MODEL"] == "demo"
    assert guide.aliases == {"claude-*": "demo"}
    text = render(guide, URL)
    assert 'cluster alias "claude-*" demo' in text  # quoted: the shell must not expand it


def test_codex_gets_a_responses_provider_in_valid_toml() -> None:
    guide = guides(URL, ["demo"])["codex"]
    config = tomllib.loads(guide.files["~/.codex/config.toml"])
    provider = config["model_providers"][config["model_provider"]]
    assert provider["wire_api"] == "responses" and provider["base_url"] == f"{URL}/v1"
    assert config["model"] == "demo" and provider["env_key"] == "METERLESS_API_KEY"


def test_opencode_lists_every_model_in_valid_json() -> None:
    config = json.loads(guides(URL, ["demo", "qwen"])["opencode"].files["opencode.json"])
    assert list(config["provider"]["meterless"]["models"]) == ["demo", "qwen"]


def test_the_command_prints_one_client_as_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["integrations", "aider", "--model", "demo", "--url", URL, "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert list(out) == ["aider"] and out["aider"]["run"] == "aider --model openai/demo"


def test_a_cluster_without_models_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(ValueError, match="cluster deploy"):
        guides(URL, [])
    assert main(["integrations", "--url", "http://127.0.0.1:9"]) == 1
    assert capsys.readouterr().err.startswith("cluster: cannot reach the cluster")
