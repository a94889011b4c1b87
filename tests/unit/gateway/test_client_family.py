"""Which program sent a request: the User-Agents of the clients people point at the endpoint."""

from __future__ import annotations

import pytest

from cluster.gateway.client_family import client_family


@pytest.mark.parametrize(
    ("user_agent", "family"),
    [
        ("claude-cli/2.0.14 (external, cli)", "claude-code"),
        ("codex_cli_rs/0.171.0 (Debian 13; x86_64) xterm-256color", "codex"),
        ("OpenAI/Python 1.109.1", "openai-python"),
        ("Anthropic/Python 0.69.0", "anthropic-python"),
        ("OpenAI/JS 5.23.0", "openai-node"),
        ("curl/8.14.1", "other"),
        ("", "other"),
        (None, "other"),
    ],
)
def test_each_client_has_its_family(user_agent: str | None, family: str) -> None:
    assert client_family(user_agent) == family
