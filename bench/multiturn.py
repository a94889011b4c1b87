"""Part 2 of bench.routing: multi-turn chat with long histories, with and without affinity.

Each conversation has its own long history (a document of about `--history` tokens in its
first message); every turn appends the model's answer and a new question, `--think` seconds
after the answer, so a node that served an earlier turn holds most of the prompt in its prompt
cache. The conversations start `--stagger` seconds apart and run side by side. The table
compares the first turn's TTFT with the later turns', the share of later turns' prompt tokens
the nodes found cached, and how often a turn went back to the node of the turn before.
Target: prefix affinity cuts p50 TTFT of turns >= 2 by >= 2x.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import random
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from bench.common import (
    HTTP_ERRORS,
    Timing,
    http_client,
    ms,
    percentile,
    stream_http,
    table,
    verdict,
)
from node_agent.demo_model import demo_model_path

CHAT_MODEL = "chat"  # part 2's agents serve the demo model under this name
NO_AFFINITY = "fastest --no-affinity"
AFFINITY_SETTINGS = {
    "fastest": "affinity on (fastest)",
    NO_AFFINITY: "affinity off (fastest --no-affinity)",
}
AFFINITY_GAIN = 2.0

SUBJECTS = (
    "the printer",
    "the shared folder",
    "the desk lamps",
    "the backup disk",
    "the meeting room",
    "the coffee machine",
    "the network switch",
    "the old laptop",
)
VERBS = ("moved", "checked", "cleaned", "labelled", "replaced", "counted", "tested", "listed")
DAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday")
QUESTIONS = (
    "What happened next?",
    "Who checked it?",
    "Why does that matter?",
    "What should we do on Friday?",
    "Summarise the last part.",
    "What is still open?",
    "Which machine was busiest?",
    "Tell me more about the desk.",
)


def document(seed: str, tokens: int, count: Callable[[str], int]) -> str:
    """Office notes of about `tokens` tokens (as `count` counts them), different per seed."""
    rng = random.Random(seed)
    lines = [f"Notes {seed}, kept by the office."]
    while count(" ".join(lines)) < tokens:
        lines.append(
            f"On {rng.choice(DAYS)} the team {rng.choice(VERBS)} "
            f"{rng.choice(SUBJECTS)} and wrote down item {rng.randrange(1000)}."
        )
    return " ".join(lines)


def token_counter(models: Path) -> Callable[[str], int]:
    """The demo tokenizer's token count, or four characters a token without `tokenizers`."""
    try:
        from tokenizers import Tokenizer
    except ImportError:
        return lambda text: len(text) // 4
    tokenizer = Tokenizer.from_file(str(demo_model_path(models.parent) / "tokenizer.json"))
    return lambda text: len(tokenizer.encode(text).ids)


@dataclass(frozen=True)
class Turn:
    """One turn of one conversation as the client saw it."""

    conversation: int
    turn: int
    timing: Timing


async def conversations(
    url: str, names: dict[str, str], documents: list[str], args: argparse.Namespace
) -> list[Turn]:
    """Every conversation at once, each one turn after another."""
    http = http_client(args.conversations)

    async def talk(c: int) -> list[Turn]:
        await asyncio.sleep(c * args.stagger)  # people do not all start at the same instant
        history = [("user", f"{documents[c]}\n\n{QUESTIONS[c % len(QUESTIONS)]}")]
        turns = []
        for k in range(1, args.turns + 1):
            try:
                timing, answer = await stream_http(
                    http, url, history, args.answer_tokens, model=CHAT_MODEL
                )
            except HTTP_ERRORS as exc:  # reported, not fatal to the run
                print(f"  conversation {c} turn {k} failed ({exc!r}); it ends here", flush=True)
                break
            timing = dataclasses.replace(timing, node=names.get(timing.node, timing.node))
            turns.append(Turn(c, k, timing))
            history += [("assistant", answer), ("user", QUESTIONS[(c + k) % len(QUESTIONS)])]
            if k < args.turns:
                await asyncio.sleep(args.think)  # the person reads the answer
        return turns

    try:
        done = await asyncio.gather(*(talk(c) for c in range(args.conversations)))
    finally:
        await http.aclose()
    return [t for turns in done for t in turns]


def print_affinity(results: dict[str, list[Turn]], args: argparse.Namespace) -> None:
    """Per setting: TTFT of the first and later turns, cache hits, node changes; the verdict."""
    print(
        f"\nPart 2: {args.conversations} conversations x {args.turns} turns, started "
        f"{args.stagger:g} s apart, ~{args.history}-token document in each, answers of "
        f"{args.answer_tokens} tokens, {args.think:g} s between an answer and the next turn, "
        f"3 equal uncapped nodes keeping {args.cache_entries} conversations each in their prompt "
        "cache"
    )
    rows: list[list[object]] = []
    for label, turns in results.items():
        first = [t.timing.ttft for t in turns if t.turn == 1]
        later = [t for t in turns if t.turn >= 2]
        prompt = sum(t.timing.prompt_tokens for t in later)
        cached = sum(t.timing.cached_tokens for t in later)
        later_ttft = [t.timing.ttft for t in later]
        rows.append(
            [
                label,
                ms(percentile(first, 50)),
                ms(percentile(later_ttft, 50)),
                ms(statistics.fmean(later_ttft)),
                ms(percentile(later_ttft, 99)),
                f"{cached / max(prompt, 1):.0%}",
                f"{_same_node(turns):.0%}",
                f"{sum(t.timing.prompt_tokens for t in turns) / len(turns):.0f}",
            ]
        )
    print(
        table(
            [
                "setting",
                "TTFT p50 turn 1",
                "TTFT p50 turns>=2",
                "mean",
                "p99",
                "cached prompt",
                "same node",
                "prompt tokens",
            ],
            rows,
        )
    )
    print("\nTTFT p50 ms per turn")
    print(
        table(
            ["setting", *[f"turn {k}" for k in range(1, args.turns + 1)]],
            [
                [
                    label,
                    *[
                        ms(percentile([t.timing.ttft for t in turns if t.turn == k], 50))
                        for k in range(1, args.turns + 1)
                    ],
                ]
                for label, turns in results.items()
            ],
        )
    )
    on, off = (
        percentile([t.timing.ttft for t in results[AFFINITY_SETTINGS[p]] if t.turn >= 2], 50)
        for p in ("fastest", NO_AFFINITY)
    )
    print(
        f"p50 TTFT of turns >= 2, off / on: {off / on:.2f}x (target >= {AFFINITY_GAIN:g}x) "
        f"{verdict(off / on >= AFFINITY_GAIN)}"
    )
    if (same := _same_node(results[AFFINITY_SETTINGS["fastest"]])) < 0.9:
        print(
            f"note: with affinity on only {same:.0%} of later turns went back to the node "
            "that served the turn before."
        )


def _same_node(turns: Sequence[Turn]) -> float:
    """Share of turns >= 2 served by the node that served the conversation's previous turn."""
    by_turn = {(t.conversation, t.turn): t.timing.node for t in turns}
    later = [(c, k) for c, k in by_turn if k >= 2]
    same = sum(by_turn[(c, k)] == by_turn.get((c, k - 1)) for c, k in later)
    return same / max(len(later), 1)
