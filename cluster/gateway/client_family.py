"""Which program sent a request, from its User-Agent: one family name, for the ledger.

Only the family is kept (never the whole header): a handful of values to group traffic by, and
nothing that tells one person's machine from another's.
"""

from __future__ import annotations

from starlette.requests import Request

# (what the User-Agent contains, lower-cased; the family), first match wins.
FAMILIES = (
    ("claude-cli/", "claude-code"),
    ("claude-code", "claude-code"),
    ("codex", "codex"),
    ("openai/python", "openai-python"),
    ("anthropic/python", "anthropic-python"),
    ("openai/js", "openai-node"),
    ("anthropic/js", "anthropic-node"),
)
OTHER = "other"


def client_of(request: Request) -> str:
    """The family of the program that sent `request`."""
    return client_family(request.headers.get("user-agent"))


def client_family(user_agent: str | None) -> str:
    """The family of the program whose User-Agent this is; `other` for any other or none."""
    agent = (user_agent or "").lower()
    return next((family for mark, family in FAMILIES if mark in agent), OTHER)
