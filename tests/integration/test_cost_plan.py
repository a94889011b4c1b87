"""`cluster cost plan` on a real cluster's ledger: its demand and electricity price, checked by
hand against what the ledger recorded."""

from __future__ import annotations

import json
from fractions import Fraction as F
from pathlib import Path

import httpx
import openai
import pytest

from tests.harness import AgentProcess, ClusterProcess, cli, cluster_of, share_models, wait_for

pytestmark = pytest.mark.timeout(600)


def test_the_plan_reads_the_ledgers_last_30_days(tmp_path: Path, demo_model_dir: Path) -> None:
    agent = AgentProcess(
        share_models(tmp_path / "agent", demo_model_dir.parent),
        name="node",
        args=("--model", "demo", "--no-mdns", "--kwh-usd", "0.25"),
    ).start()
    try:
        cluster = cluster_of(tmp_path, agent)
        try:
            _check_plan(cluster)
        finally:
            cluster.stop()
    finally:
        agent.stop()


def _check_plan(cluster: ClusterProcess) -> None:
    machine = ("--price", "2000", "--watts", "60", "--idle-watts", "10", "--tokens-per-s", "25")
    empty = cli(cluster, "cost", "plan", *machine)
    assert empty.returncode == 1 and "give --monthly-tokens" in empty.stderr

    oai = openai.OpenAI(base_url=f"{cluster.url}/v1", api_key="unused", max_retries=0)
    for _ in range(2):
        oai.chat.completions.create(
            model="demo", messages=[{"role": "user", "content": "hi"}], max_tokens=8
        )

    def tokens() -> dict[str, int]:
        r = httpx.get(f"{cluster.url}/admin/cost?since=30d", headers=cluster.admin_headers)
        got: dict[str, int] = r.json()["total"]["tokens"]
        return got

    def rows() -> int:
        r = httpx.get(f"{cluster.url}/admin/usage?since=30d", headers=cluster.admin_headers)
        return sum(int(g["requests"]) for g in r.json()["groups"])

    wait_for(lambda: rows() == 2, 30, "both requests' ledger rows")  # rows come in batches
    recorded = tokens()
    made = cli(cluster, "cost", "plan", *machine, "--json")
    assert made.returncode == 0, made.stderr
    plan = json.loads(made.stdout)
    steps = {s["key"]: F(s["exact"]) for s in plan["steps"]}
    month_over_30_days = F("30.4375") / 30
    assert steps["monthly_prompt_tokens"] == recorded["prompt"] * month_over_30_days
    assert steps["monthly_completion_tokens"] == recorded["completion"] * month_over_30_days
    assert F(plan["machine"]["kwh_usd"]) == F(1, 4)  # the node's electricity price
    # A few demo tokens a month never pay for a machine idling at 10 W the rest of the month.
    assert plan["fits"] and not plan["breaks_even"]
    text = cli(cluster, "cost", "plan", *machine)
    assert "prompt tokens a month = " in text.stdout and "NEVER breaks even" in text.stdout
