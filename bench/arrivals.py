"""How a benchmark's requests arrive, and how sure a difference between two paths is.

A path is a `Send`: one request (prompt, max_tokens) in, its Timing out. The runners send a
block of requests one way or another and return the timings that count; `paired_interval`
puts a 95% interval on the difference between two paths measured block by block, side by side.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable, Sequence

from bench.common import Timing, percentile

Send = Callable[[str, int], Awaitable[Timing]]  # (prompt, max_tokens) -> its timing
CLOSED_PER_CLIENT = 4  # counted requests per client and block in the closed loop
CLOSED_SPREAD_S = 0.32  # the closed loop's clients start evenly over this long
RESAMPLES = 2000  # bootstrap draws for an interval


async def one_by_one(send: Send, prompts: list[str], max_tokens: int) -> list[Timing]:
    """Each request after the last one ended."""
    return [await send(p, max_tokens) for p in prompts]


async def burst(send: Send, prompts: list[str], max_tokens: int) -> list[Timing]:
    """Every request at the same instant."""
    return list(await asyncio.gather(*(send(p, max_tokens) for p in prompts)))


def length(draw: random.Random, max_tokens: int) -> int:
    """A request's max_tokens: between half and 1.5 times the flag's."""
    return draw.randint(max(1, max_tokens // 2), max(1, max_tokens * 3 // 2))


async def closed_loop(
    send: Send,
    prompts: list[str],
    max_tokens: int,
    *,
    seed: int,
    per_client: int = CLOSED_PER_CLIENT,
    spread_s: float = CLOSED_SPREAD_S,
) -> list[Timing]:
    """One client per prompt, each sending 1 + per_client requests back to back.

    Client i starts i/len(prompts) of spread_s late; lengths are drawn from `seed`, so every
    path gets the same ones. Each client's first request is a warm-up: only the rest count.
    """

    async def client(i: int, prompt: str) -> list[Timing]:
        draw = random.Random(seed * 1000 + i)
        await asyncio.sleep(spread_s * i / len(prompts))
        timings = []
        for _ in range(1 + per_client):
            timings.append(await send(prompt, length(draw, max_tokens)))
        return timings[1:]

    per = await asyncio.gather(*(client(i, p) for i, p in enumerate(prompts)))
    return [t for timings in per for t in timings]


def paired_interval(
    a: Sequence[Sequence[Timing]],
    b: Sequence[Sequence[Timing]],
    q: float,
    resamples: int = RESAMPLES,
    what: str = "ttft",
) -> tuple[float, float]:
    """A 95% interval for b's q-th percentile TTFT (or another of Timing's figures, `what`)
    minus a's (seconds), from two paths' timings by block, by a paired block bootstrap: blocks
    drawn with replacement, the same draws for both paths (block k of each ran side by side),
    their timings pooled. Blocks, not requests, are the unit: the engine's state carries over
    within a block, so its requests are not independent draws."""
    pairs = list(zip(a, b, strict=True))
    draw = random.Random(0)
    diffs = []
    for _ in range(resamples):
        picked = draw.choices(pairs, k=len(pairs))
        diffs.append(
            percentile([getattr(t, what) for _, y in picked for t in y], q)
            - percentile([getattr(t, what) for x, _ in picked for t in x], q)
        )
    diffs.sort()
    return diffs[int(0.025 * resamples)], diffs[int(0.975 * resamples) - 1]


def interval_verdict(low: float, high: float, target_ms: float) -> str:
    """PASS when the whole interval is within the target, MISS when none of it is, else open."""
    if high * 1000 <= target_ms:
        return "PASS"
    return "MISS" if low * 1000 > target_ms else "open"
