"""`cluster cost plan`: declared or ledger demand, the steps printed, one-line errors."""

from __future__ import annotations

import json
from fractions import Fraction as F
from pathlib import Path
from typing import Any

import pytest

from cluster.cli import cost_plan
from cluster.cli.main import main

MACHINE = ["--price", "2000", "--watts", "60", "--idle-watts", "10", "--tokens-per-s", "25"]
DECLARED = ["--monthly-tokens", "20000000,5000000", "--kwh-usd", "0.30", "--model", "gpt-4o"]


@pytest.fixture(autouse=True)
def shipped_prices(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The shipped price table, whatever the user's config dir holds."""
    monkeypatch.setenv("METERLESS_CONFIG_DIR", str(tmp_path))


def test_declared_demand_prints_every_step(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["cost", "plan", *DECLARED, *MACHINE]) == 0
    out = capsys.readouterr().out
    assert "rented: gpt-4o at $2.5 in, $10 out per million tokens" in out
    assert " 5. the month rented = $50 + $50 = $100\n" in out
    assert "monthly saving = $100 rented - $3.0248 electricity = $96.9752" in out
    assert out.endswith("breaks even in 20.6238 months, within the 36-month write-off\n")


def test_json_carries_exact_values(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["cost", "plan", *DECLARED, *MACHINE, "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["breaks_even"] and data["fits"]
    assert F(data["steps"][-1]["exact"]) == F(12_000_000, 581_851)
    assert data["machine"]["kwh_usd"] == "3/10" and data["reference"]["model"] == "gpt-4o"


def test_capacity_and_never_are_said_plainly(capsys: pytest.CaptureFixture[str]) -> None:
    slow = [*MACHINE[:-1], "0.5"]
    assert main(["cost", "plan", *DECLARED, *slow]) == 0
    assert (
        "CAPACITY: at 0.5 tokens/s the machine cannot serve this demand" in capsys.readouterr().out
    )
    small = ["--monthly-tokens", "0,1000", "--kwh-usd", "0.30"]
    assert main(["cost", "plan", *small, *MACHINE]) == 0
    assert "NEVER breaks even" in capsys.readouterr().out


def test_demand_from_the_ledger(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    asked: list[str] = []

    def admin_get(url: str, path: str, body: Any = None, *, method: str | None = None) -> Any:
        asked.append(path)
        nodes = [{"profile": {"kwh_usd": 0.2}}, {"profile": {"kwh_usd": 0.25}}]
        return {"total": {"tokens": {"prompt": 3_000_000, "completion": 600_000}}, "nodes": nodes}

    monkeypatch.setattr(cost_plan, "admin_get", admin_get)
    assert main(["cost", "plan", *MACHINE, "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert asked == ["/admin/cost?since=30d"]
    steps = {s["key"]: F(s["exact"]) for s in data["steps"]}
    assert steps["monthly_completion_tokens"] == F(600_000) * F("30.4375") / 30
    assert data["machine"]["kwh_usd"] == "1/4"  # the nodes' highest


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--monthly-tokens", "5", *MACHINE, "--kwh-usd", "1"],
            "--monthly-tokens '5': give IN,OUT",
        ),
        (["--monthly-tokens", "1,2", *MACHINE], "give --kwh-usd"),
        ([*DECLARED, *MACHINE[:-1], "0"], "--tokens-per-s '0': give a positive number"),
        ([*DECLARED, *MACHINE, "--model", "nope"], "no price for 'nope'"),
        ([*MACHINE, "--url", "http://127.0.0.1:9"], "cannot reach the cluster"),
    ],
)
def test_bad_input_is_one_line(
    capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    assert main(["cost", "plan", *args]) == 1
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
