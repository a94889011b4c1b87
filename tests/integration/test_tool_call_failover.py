"""A node that dies in the middle of a turn of tool calls: the stream the client is reading ends
with an error event and the usage so far, as a text stream does, never with a half-made call."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.harness import AgentProcess, ClusterProcess, peered_office, share_models

pytestmark = pytest.mark.timeout(300)

TOOLS: list[Any] = [
    {
        "type": "function",
        "function": {
            "name": "note",
            "parameters": {
                "type": "object",
                "properties": {"text": {"type": "string", "maxLength": 16}},
                "required": ["text"],
                "additionalProperties": False,
            },
        },
    }
]


@pytest.fixture(scope="module")
def office(
    tmp_path_factory: pytest.TempPathFactory, demo_model_dir: Path
) -> Iterator[tuple[ClusterProcess, list[AgentProcess]]]:
    """One MLX agent slowed to 15 decode steps a second, so that a turn of calls takes a while."""
    root = tmp_path_factory.mktemp("tool-failover")
    agent = AgentProcess(
        share_models(root / "agent", demo_model_dir.parent),
        name="slow-node",
        args=("--model", "demo", "--no-mdns", "--max-steps-per-s", "15"),
    )
    cluster = ClusterProcess(root / "head")
    cluster.data_dir.mkdir()
    with peered_office(cluster, [agent]) as office:
        yield office


def test_a_node_dying_between_calls_ends_the_stream_with_an_error_and_the_usage(
    office: tuple[ClusterProcess, list[AgentProcess]],
) -> None:
    cluster, [agent] = office
    body = {
        "model": "demo",
        "messages": [{"role": "user", "content": "Take notes on the week."}],
        "tools": TOOLS,
        "tool_choice": "required",  # calls from the first token, one after another
        "max_tokens": 400,
        "temperature": 0,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    calls: dict[int, list[str]] = {}
    payloads: list[dict[str, Any]] = []
    killed = False
    with httpx.stream(
        "POST", f"{cluster.url}/v1/chat/completions", json=body, timeout=60
    ) as response:
        assert response.status_code == 200
        for line in response.iter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            payload = json.loads(line[6:])
            payloads.append(payload)
            for choice in payload.get("choices") or ():
                for call in choice["delta"].get("tool_calls") or ():
                    calls.setdefault(call["index"], []).append(call["function"]["arguments"])
            if calls and not killed:  # the first call is out, more are being made
                agent.kill()
                killed = True
    assert killed, "no tool call came before the stream ended"
    error, usage = payloads[-1], payloads[-2]["usage"]
    assert error["error"]["code"] == "upstream_failed" and "mid-stream" in error["error"]["message"]
    assert usage["prompt_tokens"] > 0 and usage["completion_tokens"] > 0
    assert not any(p.get("choices") and p["choices"][0]["finish_reason"] for p in payloads)
    for fragments in calls.values():  # every call that was sent, was sent whole
        assert json.loads("".join(fragments))["text"] is not None
