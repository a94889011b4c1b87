"""What the gateway reads off a request before it routes it: the key, the dialect, the route.

Pure: plain functions of a request's headers and parsed body.
"""

from __future__ import annotations

from starlette.requests import Request

from cluster.gateway import front
from cluster.gateway.prefix_keys import prefix_keys_for_messages, with_session
from cluster.gateway.routing import RouteRequest, expected_tokens
from cluster.types import ModelName
from node_agent.types import GenerateRequest


def speaks_anthropic(request: Request) -> bool:
    """Whether the request is Anthropic's (its answers and errors take Anthropic's shapes): on
    its routes, or carrying its version header (`GET /v1/models` serves both)."""
    return front.route_path(request.scope).startswith("/v1/messages") or (
        "anthropic-version" in request.headers
    )


def credentials(request: Request) -> str | None:
    """The request's API key as an Authorization header: OpenAI's clients send that, Anthropic's
    an `x-api-key` (Claude Code sends either, as configured)."""
    authorization = request.headers.get("authorization")
    if authorization is None and (key := request.headers.get("x-api-key")):
        return f"Bearer {key}"
    return authorization


def chat_route(
    generate: GenerateRequest,
    parts: list[tuple[str, str]],
    output_limit: int | None,
    session: str | None,
) -> RouteRequest:
    """What routing needs of a chat-like request: its size, its prefix keys (led by its
    session's), and what its node must be able to do."""
    chars = sum(len(text) for _, text in parts)
    keys = with_session(prefix_keys_for_messages(parts), session)
    return RouteRequest(
        ModelName(generate.model),
        expected_tokens(chars, output_limit),
        keys,
        generate.needs(),
        chars,
    )
