"""Continuous streaming load from the `openai` client, what each client saw, the ledger's view
and an agent's own count, and a line of figures per scenario.

A request's fate as its client saw it: `ok` (streamed to the end), `broken` (it had begun
streaming when it ended with an in-band error event) or `failed` (it never began: an HTTP error
or a dropped connection). The goal everywhere is zero `failed`.
"""

from __future__ import annotations

import asyncio
import collections
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import openai

from cluster.node_client import NodeClient
from node_agent.trust import ClusterSecret
from tests.multihost.office import Head, wait_for


@dataclass
class Seen:
    """What one client saw of one streamed chat completion."""

    node: str = ""
    request_id: str = ""
    chunks: int = 0  # chunks with content or reasoning: what says the stream had started
    prompt_tokens: int = 0
    completion_tokens: int = 0
    error: str = ""
    began: float = 0.0  # monotonic
    ended: float = 0.0

    @property
    def fate(self) -> str:
        """ok, broken (after the first chunk) or failed (before it)."""
        if not self.error:
            return "ok"
        return "broken" if self.chunks else "failed"


def _said(delta: Any) -> bool:
    """Whether a delta carries what the model generated: answer text, or (the demo model thinks
    when it samples) reasoning."""
    return bool(delta.content or (delta.model_extra or {}).get("reasoning_content"))


def stream_chat(
    client: openai.OpenAI, i: int, max_tokens: int = 32, seen: Seen | None = None, tag: str = ""
) -> Seen:
    """One streamed chat completion, read as an application would, filling in `seen` as it goes.

    `tag` makes the prompt new (no node holds it in its prompt cache, so affinity plays no part).
    """
    seen = seen or Seen()
    seen.began = time.monotonic()
    try:
        raw = client.chat.completions.with_raw_response.create(
            model="demo",
            max_tokens=max_tokens,
            stream=True,
            seed=i,
            stream_options={"include_usage": True},
            messages=[{"role": "user", "content": f"Tell me about the office, {tag} part {i}."}],
        )
        seen.node = raw.headers.get("x-meterless-node", "")
        seen.request_id = raw.headers.get("x-meterless-request-id", "")
        for chunk in raw.parse():
            seen.chunks += any(_said(c.delta) for c in chunk.choices)
            if chunk.usage is not None:
                seen.prompt_tokens = chunk.usage.prompt_tokens
                seen.completion_tokens = chunk.usage.completion_tokens
    except openai.APIError as exc:
        seen.error = f"{type(exc).__name__}: {exc}"
    seen.ended = time.monotonic()
    return seen


@dataclass
class Load:
    """`workers` clients streaming back to back until stopped."""

    url: str
    workers: int = 4
    max_tokens: int = 32
    seen: list[Seen] = field(default_factory=list)
    tag: str = field(default_factory=lambda: uuid.uuid4().hex[:8])
    current: dict[int, Seen] = field(default_factory=dict)  # per worker, the request under way
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)

    def start(self) -> Load:
        """Start the clients."""
        for w in range(self.workers):
            t = threading.Thread(target=self._work, args=(w,), daemon=True)
            t.start()
            self._threads.append(t)
        return self

    def _work(self, w: int) -> None:
        client = openai.OpenAI(
            base_url=f"{self.url}/v1", api_key="unused", max_retries=0, timeout=120
        )
        i = 0
        while not self._stop.is_set():
            self.current[w] = seen = Seen()
            self.seen.append(stream_chat(client, w * 100_000 + i, self.max_tokens, seen, self.tag))
            i += 1

    def streaming_on(self, node: str) -> int:
        """How many requests are streaming from `node` now (begun, not ended)."""
        return sum(
            s.node == node and s.chunks > 0 and not s.ended for s in list(self.current.values())
        )

    def stop(self) -> list[Seen]:
        """Stop the clients, let the requests in flight finish; everything seen."""
        self._stop.set()
        for t in self._threads:
            t.join(timeout=180)
        return list(self.seen)


@contextmanager
def load(url: str, workers: int = 4, max_tokens: int = 32) -> Iterator[Load]:
    """A running Load, stopped on leaving."""
    running = Load(url, workers, max_tokens).start()
    try:
        yield running
    finally:
        running.stop()


def fates(seen: Iterable[Seen]) -> collections.Counter[str]:
    """How many requests ended each way."""
    return collections.Counter(s.fate for s in seen)


def tally(seen: Iterable[Seen]) -> dict[str, dict[str, int]]:
    """Per node id, as the clients saw it: requests, ok, broken, prompt and completion tokens."""
    out: dict[str, dict[str, int]] = {}
    for s in seen:
        t = out.setdefault(
            s.node,
            dict.fromkeys(("requests", "ok", "broken", "prompt_tokens", "completion_tokens"), 0),
        )
        t["requests"] += 1
        t[s.fate] = t.get(s.fate, 0) + 1
        t["prompt_tokens"] += s.prompt_tokens
        t["completion_tokens"] += s.completion_tokens
    return out


_LEDGER_COUNTS = (
    "requests",
    "ok",
    "failed_over",
    "cancelled",
    "error",
    "prompt_tokens",
    "completion_tokens",
)


def ledger_tally(
    before: dict[str, dict[str, Any]], after: dict[str, dict[str, Any]]
) -> dict[str, dict[str, int]]:
    """Per node id, what the ledger recorded between two `Head.usage()` snapshots."""
    out = {}
    for node, a in after.items():
        b = before.get(node, {})
        d = {k: (a[k] or 0) - (b.get(k) or 0) for k in _LEDGER_COUNTS}
        if d["requests"]:
            out[node] = {
                "requests": d["requests"],
                "ok": d["ok"] + d["failed_over"],
                "broken": d["error"],
                "cancelled": d["cancelled"],
                "prompt_tokens": d["prompt_tokens"],
                "completion_tokens": d["completion_tokens"],
            }
    return out


def wait_recorded(
    head: Head, before: dict[str, dict[str, Any]], n: int, timeout: float = 30.0
) -> dict[str, dict[str, int]]:
    """The ledger's tally once it holds `n` more requests than at `before`."""
    return wait_for(
        lambda: (
            (t := ledger_tally(before, head.usage()))
            and sum(v["requests"] for v in t.values()) >= n
            and t
        ),
        timeout,
        f"the ledger to record {n} requests",
    )


def quiet_usage(head: Head, quiet_s: float = 1.0) -> dict[str, dict[str, Any]]:
    """`Head.usage()` once it stopped changing: rows of earlier requests have all arrived."""
    last = head.usage()
    while True:
        time.sleep(quiet_s)
        now = head.usage()
        if now == last:
            return now
        last = now


def ledger_rows(data_dir: Path) -> dict[str, dict[str, Any]]:
    """Every row of the head's ledger file, by request id."""
    from cluster.ledger.store import FILE_NAME

    with sqlite3.connect(f"file:{data_dir / FILE_NAME}?mode=ro", uri=True) as conn:
        conn.row_factory = sqlite3.Row
        return {r["request_id"]: dict(r) for r in conn.execute("SELECT * FROM requests")}


def ledger_ids(data_dir: Path) -> set[str]:
    """Every request id in the head's ledger file."""
    return set(ledger_rows(data_dir))


def disagreements(seen: Iterable[Seen], rows: dict[str, dict[str, Any]]) -> list[str]:
    """Where the ledger's row for a request differs from what its client saw."""
    outcome = {"ok": ("ok", "failed-over"), "broken": ("error",)}
    wrong = []
    for s in seen:
        row = rows.get(s.request_id)
        mine = (s.node, s.prompt_tokens, s.completion_tokens)
        if row is None:
            wrong.append(f"{s.request_id or s.error}: no row")
        elif (row["node_id"], row["prompt_tokens"], row["completion_tokens"]) != mine or (
            row["outcome"] not in outcome.get(s.fate, ())
        ):
            wrong.append(f"{s.request_id}: client saw {s.fate} {mine}, ledger has {row}")
    return wrong


def report(scenario: str, **figures: object) -> None:
    """One line of measured figures for the closing note."""
    print(
        f"[{scenario}] "
        + ", ".join(
            f"{k}={v:.2f}" if isinstance(v, float) else f"{k}={v}" for k, v in figures.items()
        )
    )


def agent_counters(address: str, secret: ClusterSecret | None) -> int:
    """Tokens the agent's `demo` has generated since it loaded (its status stream's counter)."""

    async def first() -> int:
        node = NodeClient(address, secret=secret)
        try:
            async for sample in node.watch_status():
                return sum(m.generated_tokens for m in sample.models)
        finally:
            await node.close()
        return 0

    return asyncio.run(first())
