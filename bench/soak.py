"""A soak: mixed traffic for a long while, with agents killed and restarted every few minutes.

    .venv/bin/python -m bench.soak [--minutes 30] [--quick] [--agents 2] [--clients 4]
                                   [--kill-every 180] [--down 20] [--max-tokens 24]

`--agents` uncapped agents on the demo model behind one `cluster up --routing fastest`; then
`--clients` closed-loop clients send, in turn, OpenAI chat completions (whole and streamed),
completions, and Anthropic messages (streamed). Every `--kill-every` seconds one agent, in
turn, is killed (SIGKILL: no goodbye, requests in flight on it cut off) and started again
`--down` seconds later. At the end the head is stopped cleanly (which flushes the ledger) and
its ledger is read.

Each request's fate, as its client saw it: `ok`; `lost` (it failed before anything streamed:
the failover should have hidden the kill); `broken` (it failed after it had started streaming:
a kill mid-stream cannot be hidden). Goals: no request lost, and the ledger's rows = the
requests the clients sent (none acknowledged and then lost, none recorded twice).
"""

from __future__ import annotations

import argparse
import itertools
import json
import sqlite3
import threading
import time
from collections import Counter
from dataclasses import dataclass, field

import httpx

from bench.common import (
    demo_models,
    machine_line,
    make_agents,
    start_all,
    start_cluster,
    table,
    verdict,
    workspace,
)
from tests.harness import AgentProcess

PROMPTS = ("Tell me about the sea.", "Write a short note.", "What is a loaf?", "Say hello.")


@dataclass
class Tally:
    """What the clients saw, shared by their threads."""

    fates: Counter[str] = field(default_factory=Counter)
    by_kind: Counter[tuple[str, str]] = field(default_factory=Counter)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, kind: str, fate: str) -> None:
        with self.lock:
            self.fates[fate] += 1
            self.by_kind[kind, fate] += 1


# Each kind of request: its path, and whether it is streamed.
KINDS = {
    "chat": ("/v1/chat/completions", False),
    "chat-stream": ("/v1/chat/completions", True),
    "completion": ("/v1/completions", False),
    "messages-stream": ("/v1/messages", True),
}


def _body(path: str, prompt: str, max_tokens: int, stream: bool) -> dict[str, object]:
    if path == "/v1/completions":
        return {"model": "demo", "prompt": prompt, "max_tokens": max_tokens}
    messages = [{"role": "user", "content": prompt}]
    return {"model": "demo", "messages": messages, "max_tokens": max_tokens, "stream": stream}


def _send(client: httpx.Client, path: str, body: dict[str, object], stream: bool) -> str:
    """One request's fate: ok, lost (nothing streamed) or broken (cut off mid-stream)."""
    started = False
    try:
        if not stream:
            r = client.post(path, json=body)
            return "ok" if r.status_code == 200 and r.json().get("usage") else "lost"
        with client.stream("POST", path, json=body) as r:
            if r.status_code != 200:
                return "lost"
            for line in r.iter_lines():
                if not line.startswith("data:"):
                    continue
                data = line[5:].strip()
                if data == "[DONE]":  # OpenAI's end
                    return "ok"
                event = json.loads(data)
                if event.get("type") == "message_stop":  # Anthropic's
                    return "ok"
                if "error" in event:
                    return "broken" if started else "lost"
                started = started or _has_text(event)
            return "broken" if started else "lost"
    except (httpx.HTTPError, ValueError):
        return "broken" if started else "lost"


def _has_text(event: dict[str, object]) -> bool:
    """Whether an event carries generated text: an answer, reasoning or a tool call."""
    choices = event.get("choices")
    if isinstance(choices, list):
        return any(v for c in choices for k, v in c.get("delta", {}).items() if k != "role")
    return event.get("type") == "content_block_delta"


def client_loop(
    url: str, i: int, args: argparse.Namespace, tally: Tally, stop: threading.Event
) -> None:
    """Send one kind after another, client `i` starting at the `i`th, until `stop`."""
    kinds = itertools.islice(itertools.cycle(KINDS), i % len(KINDS), None)
    with httpx.Client(base_url=url, timeout=httpx.Timeout(300.0)) as client:
        for n, kind in enumerate(kinds):
            if stop.is_set():
                return
            path, stream = KINDS[kind]
            body = _body(path, PROMPTS[(i + n) % len(PROMPTS)], args.max_tokens, stream)
            tally.add(kind, _send(client, path, body, stream))


def chaos(
    agents: list[AgentProcess], args: argparse.Namespace, stop: threading.Event, kills: list[str]
) -> None:
    """Kill one agent in turn every `kill_every` s; start it again `down` s later."""
    for agent in itertools.cycle(agents):
        if stop.wait(args.kill_every):
            return
        agent.kill()
        kills.append(agent.name)
        print(f"  {time.strftime('%H:%M:%S')} killed {agent.name}", flush=True)
        stop.wait(args.down)
        agent.start()
        print(f"  {time.strftime('%H:%M:%S')} restarted {agent.name}", flush=True)


def main() -> None:
    args = parse_args()
    print(machine_line())
    with workspace("meterless-soak-") as (root, stack):
        models = demo_models(root)
        agents = make_agents(root, models, {f"agent{i}": 0 for i in range(args.agents)})
        start_all(stack, agents)
        cluster = start_cluster(root, agents, "fastest")
        stack.callback(cluster.stop)
        tally, stop, kills = Tally(), threading.Event(), list[str]()
        began = time.time()
        threads = [
            threading.Thread(target=client_loop, args=(cluster.url, i, args, tally, stop))
            for i in range(args.clients)
        ]
        threads.append(threading.Thread(target=chaos, args=(agents, args, stop, kills)))
        for t in threads:
            t.start()
        try:
            stop.wait(args.minutes * 60)
        finally:
            stop.set()
            for t in threads:
                t.join()
        cluster.stop()  # a clean stop flushes every gateway's rows into the ledger
        with sqlite3.connect(cluster.data_dir / "ledger.sqlite3") as db:
            rows = db.execute("SELECT COUNT(*) FROM requests WHERE at >= ?", (began,)).fetchone()[0]
        report(tally, rows, kills, time.time() - began)


def report(tally: Tally, rows: int, kills: list[str], seconds: float) -> None:
    sent = sum(tally.fates.values())
    body = [
        [kind, *(tally.by_kind[kind, fate] for fate in ("ok", "lost", "broken"))] for kind in KINDS
    ]
    body.append(["all", tally.fates["ok"], tally.fates["lost"], tally.fates["broken"]])
    print(f"\n{seconds / 60:.1f} min, {len(kills)} agent kills, {sent} requests")
    print(table(["kind", "ok", "lost", "broken"], body))
    print(
        f"lost before streaming: {tally.fates['lost']} (goal 0) {verdict(tally.fates['lost'] == 0)}"
    )
    print(f"ledger rows {rows} vs requests sent {sent} (goal equal) {verdict(rows == sent)}")


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--minutes", type=float, default=30.0, help="how long the traffic runs")
    p.add_argument("--quick", action="store_true", help="3 minutes, a kill every minute")
    p.add_argument("--agents", type=int, default=2)
    p.add_argument("--clients", type=int, default=4)
    p.add_argument("--kill-every", type=float, default=180.0, help="seconds between kills")
    p.add_argument("--down", type=float, default=20.0, help="seconds a killed agent stays down")
    p.add_argument("--max-tokens", type=int, default=24)
    args = p.parse_args()
    if args.quick:
        args.minutes, args.kill_every = 3.0, 60.0
    return args


if __name__ == "__main__":
    main()
