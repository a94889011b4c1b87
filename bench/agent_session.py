"""Coding-agent sessions over Anthropic Messages: how much of each turn's prompt is cached.

    .venv/bin/python -m bench.agent_session [--sessions 4] [--turns 8] [--system 16000]
                                            [--turn-tokens 300] [--answer-tokens 24]

An agent such as Claude Code sends, every turn, the same long system prompt and tool
definitions, the whole conversation so far, and a few hundred new tokens (a tool result, the
user's next message), with its session in a header (`X-Claude-Code-Session-Id`) and a
per-request attribution line first in the system prompt. Here `--sessions` such sessions run
side by side for `--turns` turns each, streamed through `/v1/messages`, over two equal MLX
nodes serving the demo model, first through `cluster up` as shipped (fastest, with prefix and
session affinity), then through `--routing round-robin`; each setting has system prompts of its
own, so neither finds the other's in a cache.

Figures per setting, over turns >= 2: the share of prompt tokens read from the nodes' caches
(`cache_read_input_tokens` against the whole prompt; goal >= 0.9), and p50 TTFT (to the first
content delta) against turn 1's (goal <= 0.3x).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import time
from dataclasses import dataclass
from typing import Any

from bench.common import (
    demo_models,
    http_client,
    machine_line,
    make_agents,
    ms,
    percentile,
    start_all,
    start_cluster,
    table,
    verdict,
    workspace,
)
from bench.multiturn import DAYS, SUBJECTS, VERBS

SETTINGS = {"fastest": "fastest (as shipped)", "round-robin": "round-robin"}
CACHE_GOAL, TTFT_GOAL = 0.9, 0.3
TOOLS = [
    {
        "name": name,
        "description": f"{name} a file of the project",
        "input_schema": {
            "type": "object",
            "properties": {"path": {"type": "string"}, "text": {"type": "string"}},
            "required": ["path"],
        },
    }
    for name in ("Read", "Write", "Edit", "Grep", "Glob", "Bash")
]


@dataclass(frozen=True)
class Turn:
    """One turn as the client saw it."""

    session: int
    turn: int
    ttft_s: float
    prompt_tokens: int  # the whole prompt: read from cache or not
    cached_tokens: int
    node: str


def notes(rng: random.Random, words: int) -> str:
    """Office notes of about `words` words."""
    out: list[str] = []
    while len(out) < words:
        day, verb, what = rng.choice(DAYS), rng.choice(VERBS), rng.choice(SUBJECTS)
        out += f"On {day} the team {verb} {what} and noted item {rng.randrange(1000)}.".split()
    return " ".join(out)


async def count_tokens(http: Any, url: str, system: str) -> int:
    """The system prompt with the tools, in tokens, as a node counts them."""
    body = {"model": "demo", "system": system, "tools": TOOLS, "messages": [_user("hi")]}
    r = await http.post(f"{url}/v1/messages/count_tokens", json=body)
    r.raise_for_status()
    return int(r.json()["input_tokens"])


async def system_prompt(http: Any, url: str, seed: str, tokens: int) -> str:
    """Instructions of about `tokens` tokens with the tools, different for each seed."""
    rng = random.Random(seed)
    words = tokens // 2
    text = f"You are agent {seed}. " + notes(rng, words)
    for _ in range(3):  # scale by the tokens a word came to, as the node counts them
        have = await count_tokens(http, url, text)
        if have >= tokens * 0.97:
            break
        text += " " + notes(rng, int((tokens - have) * words / have))
    return text


def _user(text: str) -> dict[str, Any]:
    return {"role": "user", "content": text}


async def turn(
    http: Any, url: str, session: str, system: str, messages: list[Any], answer_tokens: int
) -> tuple[float, dict[str, Any], str, str]:
    """One streamed turn: TTFT, the final usage, the answer's text, and the node."""
    attribution = f"x-anthropic-billing-header: cc_version=2.1.0; cch={random.randrange(10**6)};"
    body = {
        "model": "demo",
        "max_tokens": answer_tokens,
        "temperature": 0,
        "stream": True,
        "system": [{"type": "text", "text": attribution}, {"type": "text", "text": system}],
        "tools": TOOLS,
        "messages": messages,
    }
    headers = {"x-claude-code-session-id": session, "anthropic-version": "2023-06-01"}
    started, first, usage, text = time.perf_counter(), 0.0, {}, []
    async with http.stream("POST", f"{url}/v1/messages", json=body, headers=headers) as r:
        if r.status_code != 200:
            raise RuntimeError(f"{r.status_code}: {(await r.aread())[:200]!r}")
        node = r.headers.get("x-meterless-node", "")
        async for line in r.aiter_lines():
            if not line.startswith("data: "):
                continue
            event = json.loads(line[6:])
            if event["type"] == "content_block_delta":
                first = first or time.perf_counter()
                text.append(event["delta"].get("text", ""))
            elif event["type"] == "message_delta":
                usage = event["usage"]
            elif event["type"] == "error":
                raise RuntimeError(f"{session}: {event['error']['message']}")
    return (first or time.perf_counter()) - started, usage, "".join(text), node


async def run_setting(url: str, args: argparse.Namespace, seed: str) -> list[Turn]:
    """Every session at once, each turn after turn; the turns as seen."""
    http = http_client(args.sessions, kind="httpx")
    try:
        systems = [
            await system_prompt(http, url, f"{seed}-{s}", args.system) for s in range(args.sessions)
        ]

        async def session(s: int) -> list[Turn]:
            rng = random.Random(f"{seed}-turns-{s}")
            messages: list[Any] = [_user(notes(rng, args.turn_tokens * 2 // 3))]
            out = []
            for k in range(1, args.turns + 1):
                ttft, usage, answer, node = await turn(
                    http, url, f"{seed}-{s}", systems[s], messages, args.answer_tokens
                )
                cached = usage.get("cache_read_input_tokens") or 0
                out.append(Turn(s, k, ttft, usage["input_tokens"] + cached, cached, node))
                messages += [
                    {"role": "assistant", "content": answer or "ok"},
                    _user(notes(rng, args.turn_tokens * 2 // 3)),
                ]
            return out

        done = await asyncio.gather(*(session(s) for s in range(args.sessions)))
    finally:
        await http.aclose()
    return [t for turns in done for t in turns]


def report(results: dict[str, list[Turn]], args: argparse.Namespace) -> None:
    """A row per setting, then the verdicts for the shipped one."""
    print(
        f"\n{args.sessions} sessions x {args.turns} turns, ~{args.system}-token system prompt "
        f"with {len(TOOLS)} tools, ~{args.turn_tokens} new tokens a turn, answers of "
        f"{args.answer_tokens} tokens, over 2 MLX nodes; {machine_line()}"
    )
    rows, figures = [], {}
    for label, turns in results.items():
        first = [t.ttft_s for t in turns if t.turn == 1]
        later = [t for t in turns if t.turn >= 2]
        share = sum(t.cached_tokens for t in later) / max(sum(t.prompt_tokens for t in later), 1)
        ratio = percentile([t.ttft_s for t in later], 50) / percentile(first, 50)
        figures[label] = (share, ratio)
        rows.append(
            [
                label,
                ms(percentile(first, 50)),
                ms(percentile([t.ttft_s for t in later], 50)),
                f"{ratio:.2f}",
                f"{share:.2f}",
                f"{statistics.fmean(t.prompt_tokens for t in turns):.0f}",
            ]
        )
    headers = ["setting", "TTFT p50 turn 1", "turns>=2", "ratio", "cached share", "prompt"]
    print(table(headers, rows))
    share, ratio = figures[SETTINGS["fastest"]]
    cache_ok, ttft_ok = verdict(share >= CACHE_GOAL), verdict(ratio <= TTFT_GOAL)
    print(f"cached share of turns >= 2: {share:.2f} (goal >= {CACHE_GOAL}) {cache_ok}")
    print(f"p50 TTFT turns >= 2 / turn 1: {ratio:.2f} (goal <= {TTFT_GOAL}) {ttft_ok}")


def main(args: argparse.Namespace) -> None:
    """Two agents, a cluster per setting in front of both, the sessions through each."""
    with workspace("meterless-agent-session-") as (root, stack):
        models = demo_models(root)
        agents = start_all(stack, make_agents(root, models, {"node-a": 0, "node-b": 0}))
        results = {}
        for policy, label in SETTINGS.items():
            cluster = start_cluster(root, agents, policy)
            stack.callback(cluster.stop)
            results[label] = asyncio.run(run_setting(cluster.url, args, seed=policy))
            cluster.stop()
        report(results, args)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.agent_session",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--sessions", type=int, default=4)
    parser.add_argument("--turns", type=int, default=8)
    parser.add_argument("--system", type=int, default=16_000, help="system prompt tokens")
    parser.add_argument("--turn-tokens", type=int, default=300, help="new tokens a turn")
    parser.add_argument("--answer-tokens", type=int, default=24)
    return parser.parse_args()


if __name__ == "__main__":
    main(parse_args())
