"""The ledger end to end: a known workload through `cluster up` to two real agents.

Ten requests: seven served to the end (chat and completions, streamed and not), one whose client
leaves after the first token, one the node rejects (prompt too long: recorded as an error), and
one the gateway rejects before routing (a bad parameter: not recorded). So nine rows.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from node_agent.demo_model import CONTEXT
from tests.harness import AgentProcess, ClusterProcess, peered_office, share_models, wait_for

pytestmark = pytest.mark.timeout(600)

COST_FLAGS = (
    "--price-usd",
    "1440",
    "--amortize-months",
    "36",
    "--idle-watts",
    "10",
    "--busy-watts",
    "50",
    "--kwh-usd",
    "0.25",
)
Office = tuple[ClusterProcess, list[AgentProcess]]


@pytest.fixture(scope="module")
def office(tmp_path_factory: pytest.TempPathFactory, demo_model_dir: Path) -> Iterator[Office]:
    """Two agents with a cost profile, and a cluster whose data dir holds the ledger."""
    root = tmp_path_factory.mktemp("ledger")
    agents = [
        AgentProcess(
            share_models(root / f"agent{i}", demo_model_dir.parent),
            name=f"agent{i}",
            args=("--model", "demo", "--no-mdns", *COST_FLAGS),
        )
        for i in range(2)
    ]
    cluster = ClusterProcess(root / "head")
    cluster.data_dir.mkdir()
    with peered_office(cluster, agents) as office:
        yield office


def ledger_rows(cluster: ClusterProcess) -> dict[str, dict[str, Any]]:
    """Every request row in the ledger file, by request id."""
    conn = sqlite3.connect(cluster.data_dir / "ledger.sqlite3")
    conn.row_factory = sqlite3.Row
    try:
        return {r["request_id"]: dict(r) for r in conn.execute("SELECT * FROM requests")}
    finally:
        conn.close()


def cli(cluster: ClusterProcess, *args: str) -> Any:
    """`cluster ARGS --json --url ...`, parsed."""
    out = subprocess.run(
        [sys.executable, "-m", "cluster.cli", *args, "--json", "--url", cluster.url],
        capture_output=True,
        text=True,
        check=True,
        env=cluster.env,
    ).stdout
    return json.loads(out)


def served(http: httpx.Client, path: str, body: dict[str, Any]) -> dict[str, Any]:
    """One request served to the end: its id, node and the usage the response reported."""
    if not body.get("stream"):
        r = http.post(path, json=body)
        assert r.status_code == 200, r.text
        data = r.json()
        return {"id": data["id"], "node": r.headers["x-meterless-node"], "usage": data["usage"]}
    with http.stream("POST", path, json=body) as r:
        assert r.status_code == 200
        chunks = [json.loads(line[6:]) for line in r.iter_lines() if line.startswith("data: {")]
        return {
            "id": chunks[0]["id"],
            "node": r.headers["x-meterless-node"],
            "usage": chunks[-1]["usage"],
        }


def request_id(response_id: str) -> str:
    """The gateway's request id inside a response id (chatcmpl-ID or cmpl-ID)."""
    return response_id.split("-", 1)[1]


def workload(cluster: ClusterProcess) -> dict[str, Any]:
    """The ten requests; returns what the responses said."""
    chat = {
        "model": "demo",
        "messages": [{"role": "user", "content": "Say hello."}],
        "max_tokens": 8,
    }
    text = {"model": "demo", "prompt": "Once upon a time", "max_tokens": 6}
    usage = {"stream": True, "stream_options": {"include_usage": True}}
    with httpx.Client(base_url=cluster.url, timeout=120) as http:
        done = [served(http, "/v1/chat/completions", {**chat, "seed": i}) for i in range(3)]
        done += [
            served(http, "/v1/chat/completions", {**chat, **usage, "seed": i}) for i in range(2)
        ]
        done.append(served(http, "/v1/completions", text))
        done.append(served(http, "/v1/completions", {**text, **usage}))
        # Greedy: a sampled answer may end on its own before the client leaves.
        long = {**chat, "max_tokens": 400, "temperature": 0, "stream": True}
        with http.stream("POST", "/v1/chat/completions", json=long) as r:
            first = next(
                json.loads(line[6:]) for line in r.iter_lines() if line.startswith("data: {")
            )
            left = {"id": first["id"], "node": r.headers["x-meterless-node"]}
        too_long = http.post("/v1/completions", json={**text, "prompt": "word " * (CONTEXT + 100)})
        assert too_long.status_code == 400
        bad = http.post("/v1/chat/completions", json={**chat, "temperature": 5})
        assert bad.status_code == 400 and bad.json()["error"]["param"] == "temperature"
    return {"served": done, "left": left}


@pytest.fixture(scope="module")
def sent(office: Office) -> dict[str, Any]:
    """The workload, sent once; returns once the ledger holds its nine rows."""
    cluster, _ = office
    result = workload(cluster)
    wait_for(lambda: len(ledger_rows(cluster)) >= 9, 30, "nine ledger rows")
    return result


def test_one_row_per_request_with_the_tokens_the_responses_reported(
    office: Office, sent: dict[str, Any]
) -> None:
    rows = ledger_rows(office[0])
    assert len(rows) == 9
    for s in sent["served"]:
        row = rows[request_id(s["id"])]
        u = s["usage"]
        assert (row["outcome"], row["node_id"], row["attempts"]) == ("ok", s["node"], 1)
        assert row["prompt_tokens"] == u["prompt_tokens"]
        assert row["completion_tokens"] == u["completion_tokens"]
        assert row["cached_prompt_tokens"] == u["prompt_tokens_details"]["cached_tokens"]
        assert row["ttft_s"] > 0 and row["duration_s"] >= row["ttft_s"] and row["at"] > 0
        # The node's own first token came after it had the request and before the gateway had
        # the token: within the gateway's time to it.
        assert 0 < row["node_ttft_s"] < row["ttft_s"]
    left = rows[request_id(sent["left"]["id"])]
    assert (left["outcome"], left["node_id"]) == ("cancelled", sent["left"]["node"])
    assert left["node_ttft_s"] is None  # the node never finished it
    assert 1 <= left["completion_tokens"] < 400 and left["stream"] == 1
    errors = [r for r in rows.values() if r["outcome"] == "error"]
    assert len(errors) == 1 and errors[0]["node_id"] is None and errors[0]["model"] == "demo"
    assert all(r["key_id"] is None for r in rows.values())


def test_cluster_cost_and_usage_agree_with_the_ledger(office: Office, sent: dict[str, Any]) -> None:
    cluster = office[0]
    rows = [r for r in ledger_rows(cluster).values() if r["node_id"]]
    report = cli(cluster, "cost", "--since", "all")
    for node in report["nodes"]:
        mine = [r for r in rows if r["node_id"] == node["node_id"]]
        assert node["requests"] == len(mine)
        assert node["tokens"]["prompt"] == sum(r["prompt_tokens"] for r in mine)
        assert node["tokens"]["completion"] == sum(r["completion_tokens"] for r in mine)
        assert node["tokens"]["cached_prompt"] == sum(r["cached_prompt_tokens"] for r in mine)
        assert node["profile"]["price_usd"] == 1440 and node["profile_source"] == "agent"
        assert node["cost_usd"]["hardware"] > 0
        price = node["profile"]["price_usd"]
        assert node["breakeven"] == expected_breakeven(node, price, report["end"])
    total = report["total"]
    assert total["requests"] == 8
    assert total["tokens"]["total"] == sum(
        r["prompt_tokens"] + r["completion_tokens"] for r in rows
    )
    assert total["cost_usd"]["total"] == pytest.approx(
        sum(n["cost_usd"]["total"] for n in report["nodes"])
    )
    price = sum(n["profile"]["price_usd"] for n in report["nodes"])
    assert total["breakeven"] == expected_breakeven(total, price, report["end"])
    assert report["prices"]["references"] == {"demo": "gpt-4o-mini"}
    usage = cli(cluster, "usage", "--since", "all", "--by", "model")
    (demo,) = usage["groups"]
    assert (demo["requests"], demo["ok"], demo["cancelled"], demo["error"]) == (9, 7, 1, 1)
    assert demo["completion_tokens"] == sum(r["completion_tokens"] for r in rows)


def expected_breakeven(figures: dict[str, Any], price: float, end: str) -> str | None:
    """The date the recovery rate over the window repays the price; None while it is not positive.

    A node that served little on this slow machine can have spent more on idle power than its
    tokens are worth in the cloud: then it never breaks even, and the report must say so.
    """
    recovered, owned = figures["recovered_usd"], figures["owned_s"]
    if recovered <= 0 or owned <= 0:
        return None
    seconds = (price - recovered) / (recovered / owned)
    if seconds > (datetime.max.replace(tzinfo=UTC) - datetime.fromisoformat(end)).total_seconds():
        return None
    return (datetime.fromisoformat(end) + timedelta(seconds=seconds)).date().isoformat()


def test_metrics_count_the_requests(office: Office, sent: dict[str, Any]) -> None:
    text = httpx.get(f"{office[0].url}/metrics", timeout=10).text
    success = [
        line for line in text.splitlines() if line.startswith("meterless:request_success_total{")
    ]
    assert sum(float(line.rsplit(" ", 1)[1]) for line in success) == 7
    assert 'meterless:requests_total{model="demo",node="",outcome="error"} 1.0' in text
    assert "meterless:node_decode_tokens_per_second{" in text
    assert "meterless:cost_usd_total{" in text


def test_only_cluster_up_may_stop_the_cluster(office: Office, sent: dict[str, Any]) -> None:
    url = office[0].url
    for headers in ({}, {"x-meterless-shutdown-token": "guess"}):
        r = httpx.post(f"{url}/admin/ledger/flush", headers=headers, timeout=30)
        assert r.status_code == 403, r.text
    r = httpx.post(
        f"{url}/v1/completions", json={"model": "demo", "prompt": "x", "max_tokens": 1}, timeout=60
    )
    assert r.status_code == 200  # still serving


def test_set_cost_wins_and_nothing_is_lost_across_a_restart(
    office: Office, sent: dict[str, Any]
) -> None:
    cluster, agents = office
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "cluster.cli",
            "nodes",
            "set-cost",
            "agent0",
            "--price-usd",
            "999",
            "--url",
            cluster.url,
        ],
        capture_output=True,
        text=True,
        check=True,
        env=cluster.env,
    ).stdout
    assert "price_usd=999" in out
    # Sent just before the stop: their rows are still in the gateway's buffer when it starts.
    with httpx.Client(base_url=cluster.url, timeout=60) as http:
        last = [
            served(
                http, "/v1/completions", {"model": "demo", "prompt": f"Story {i}", "max_tokens": 3}
            )
            for i in range(3)
        ]
    before = ledger_rows(cluster)
    cluster.stop()
    assert cluster.proc is not None and cluster.proc.returncode >= 0  # stopped, not killed
    after_stop = ledger_rows(cluster)
    assert len(after_stop) == 13 and before.items() <= after_stop.items()
    assert all(request_id(s["id"]) in after_stop for s in last)
    cluster.start()
    wait_for(
        lambda: sum(n["state"] == "ready" for n in cluster.nodes()) == 2,
        30,
        "both nodes ready again",
    )
    report = cli(cluster, "cost", "--since", "all")
    assert report["total"]["requests"] == 12
    assert report["total"]["tokens"]["completion"] == sum(
        r["completion_tokens"] for r in after_stop.values()
    )
    by_name = {n["name"]: n for n in report["nodes"]}
    assert by_name["agent0"]["profile_source"] == "admin"
    assert by_name["agent0"]["profile"]["price_usd"] == 999
    assert by_name["agent1"]["profile"]["price_usd"] == 1440
    assert len(agents) == 2


def test_prune_folds_old_rows_and_cost_and_usage_stay_the_same(
    office: Office, sent: dict[str, Any]
) -> None:
    cluster, _ = office
    recent = ledger_rows(cluster)
    old = [
        {**r, "request_id": f"old{i}", "at": r["at"] - 3 * 86_400}
        for i, r in enumerate(recent.values())
    ]
    columns = [c for c in old[0] if c != "id"]
    conn = sqlite3.connect(cluster.data_dir / "ledger.sqlite3")
    try:
        with conn:  # three days ago: what a ledger that has run a while holds
            marks = ", ".join("?" * len(columns))
            conn.executemany(
                f"INSERT INTO requests ({', '.join(columns)}) VALUES ({marks})",
                [[r[c] for c in columns] for r in old],
            )
    finally:
        conn.close()

    def figures() -> dict[str, Any]:
        cost = cli(cluster, "cost", "--since", "all")
        nodes = {
            n["name"]: (n["requests"], n["tokens"], round(n["cloud_equivalent_usd"], 9))
            for n in cost["nodes"]
        }
        usage = {
            by: cli(cluster, "usage", "--since", "all", "--by", by)
            for by in ("model", "node", "key")
        }
        return {"nodes": nodes, "tokens": cost["total"]["tokens"], "usage": _rounded(usage)}

    before = figures()
    assert before["tokens"]["total"] == 2 * sum(
        r["prompt_tokens"] + r["completion_tokens"] for r in recent.values()
    )
    day_ago = (datetime.now(UTC) - timedelta(days=1)).isoformat()
    done = cli(cluster, "ledger", "prune", "--before", day_ago)
    assert done["requests"] == len(old) and done["request_hours"] >= 1
    assert ledger_rows(cluster).keys() == recent.keys()
    assert figures() == before


def _rounded(value: Any) -> Any:
    """Floats to 9 significant digits: a mean over folded hours may differ in the last bits."""
    if isinstance(value, float):
        return float(f"{value:.9g}")
    if isinstance(value, dict):
        return {k: _rounded(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_rounded(v) for v in value]
    return value
