"""The CLI's tables: every cell kept when stdout is a pipe, not cut to 80 columns."""

from __future__ import annotations

from typing import Any

import pytest

from cluster.cli.tables import (
    bring_home_line,
    cost_table,
    models_table,
    nodes_table,
    usage_table,
    visible,
)

LONG_MODEL = "mlx-community/Qwen3-30B-A3B-Instruct-2507-4bit"


def _node(**changes: Any) -> dict[str, Any]:
    node = {
        "node_id": "a" * 40,
        "name": "a-very-long-node-name-on-the-office-lan.local",
        "address": "192.168.100.200:50151",
        "engines": ["mlx"],
        "state": "ready",
        "memory_used_bytes": 2**34,
        "memory_total_bytes": 2**36,
        "models": [LONG_MODEL, "demo"],
        "running": 3,
        "waiting": 1,
        "decode_tps": 42.0,
        "tps_measured": True,
    }
    return {**node, **changes}


def test_a_piped_nodes_table_keeps_every_cell(capsys: pytest.CaptureFixture[str]) -> None:
    nodes_table([_node()])  # pytest's captured stdout is not a terminal, as a pipe is not
    out = capsys.readouterr().out
    assert "…" not in out
    row = next(line for line in out.splitlines() if "192.168.100.200:50151" in line)
    assert "a-very-long-node-name-on-the-office-lan.local" in row
    assert f"{LONG_MODEL}, demo" in row and "42.0" in row
    assert len(row) > 80


def test_a_piped_models_table_keeps_every_cell(capsys: pytest.CaptureFixture[str]) -> None:
    models_table([{"model": LONG_MODEL, "nodes": ["n" * 40], "ready_nodes": ["n" * 40]}])
    out = capsys.readouterr().out
    assert "…" not in out and LONG_MODEL in out and "n" * 40 in out


def test_a_chosen_tool_parser_shows_under_the_model(capsys: pytest.CaptureFixture[str]) -> None:
    spec = {"tool_parser": "qwen3_coder"}
    models_table([{"model": "coder", "nodes": [], "ready_nodes": [], "spec": spec}])
    models_table([{"model": "plain", "nodes": [], "ready_nodes": [], "spec": {"tool_parser": ""}}])
    out = capsys.readouterr().out
    assert out.count("tool parser") == 1 and "tool parser: qwen3_coder" in out


def test_each_node_shows_its_agent_version_and_an_incompatible_one_why(
    capsys: pytest.CaptureFixture[str],
) -> None:
    reason = "agent 9.0.0 speaks protocol 2.0, this head speaks 1.0"
    nodes_table(
        [
            _node(name="old", agent_version="0.3.1", protocol_version="1.0"),
            _node(
                name="future",
                address="10.0.0.9:1",
                state="incompatible",
                agent_version="9.0.0",
                protocol_version="2.0",
                models=[],
                reason=reason,
            ),
            _node(name="from-an-older-head"),  # its JSON has no versions
        ]
    )
    out = capsys.readouterr().out
    rows = {
        name: line for line in out.splitlines() for name in ("old", "future") if f" {name} " in line
    }
    assert "0.3.1" in rows["old"] and "ready" in rows["old"]
    assert "9.0.0" in rows["future"] and "incompatible" in rows["future"]
    assert f"incompatible future (10.0.0.9:1): {reason}" in out


HOSTILE = "[red]evil[/red] \x1b]0;pwned\x07\x1b[2J\u202egnp.exe"
SHOWN = "[red]evil[/red] \\x1b]0;pwned\\x07\\x1b[2J\\u202egnp.exe"


def test_control_characters_are_written_as_their_escapes() -> None:
    assert visible(HOSTILE) == SHOWN
    assert visible("tab\there\nnewline \x9b csi") == "tab\\x09here\\x0anewline \\x9b csi"
    assert visible("Qwen3-30B-A3B · café ✓") == "Qwen3-30B-A3B · café ✓"


def _terminal_output(capsys: pytest.CaptureFixture[str]) -> str:
    out = capsys.readouterr().out
    assert "\x1b" not in out and "\x07" not in out and "\u202e" not in out
    return out


def test_names_from_the_head_reach_the_terminal_literally(
    capsys: pytest.CaptureFixture[str],
) -> None:
    nodes_table([_node(name=HOSTILE, models=[HOSTILE], state="rejected", reason=HOSTILE)])
    models_table([{"model": HOSTILE, "nodes": [HOSTILE], "ready_nodes": []}])
    out = _terminal_output(capsys)
    assert out.count(SHOWN) == 6  # name, model, the rejection line (name, reason); model, node


def test_a_usage_and_a_cost_table_show_client_chosen_names_literally(
    capsys: pytest.CaptureFixture[str],
) -> None:
    group = {"model": HOSTILE, "requests": 1, "ok": 1, "failed_over": 0, "cancelled": 0}
    group |= {"error": 0, "prompt_tokens": 1, "cached_prompt_tokens": 0}
    group |= {"completion_tokens": 1, "mean_ttft_s": None, "mean_node_ttft_s": None}
    group |= {"mean_duration_s": None}
    usage_table({"by": "model", "since": "all", "groups": [group]})
    figures = {
        "tokens": {"prompt": 1, "completion": 1},
        "busy_ratio": None,
        "cost_usd": {"total": 0.0},
        "usd_per_mtok": None,
        "marginal_usd_per_mtok": None,
        "cloud_equivalent_usd": None,
        "savings_usd": None,
        "paid_off": False,
        "breakeven": None,
        "energy": {"source": "none"},
    }
    prices = {"as_of": "2026-01-01", "origin": "built-in", "references": {HOSTILE: "x"}}
    cost_table(
        {
            "since": "all",
            "nodes": [{"name": HOSTILE, **figures}],
            "total": figures,
            "prices": prices,
        }
    )
    out = _terminal_output(capsys)
    assert out.count(SHOWN) == 3  # the usage group, the cost row, the price reference


def test_a_rented_model_says_what_bringing_it_home_would_save() -> None:
    home = {
        "tokens": 1_250_000,
        "cost_usd": 4.0,
        "owned_usd_per_mtok": 2.0,
        "owned_marginal_usd_per_mtok": 0.5,
        "at_owned_usd": 2.5,
        "at_owned_marginal_usd": 0.625,
        "saving_per_month_usd": 45.65625,
    }
    line = bring_home_line(home)
    assert "the same 1,250,000 tokens here would cost $2.5000 amortised, $0.6250 marginal" in line
    assert "cluster-wide $2.000 and $0.500/Mtok" in line
    assert line.endswith("bring this home and save $45.66 a month")
    dearer = bring_home_line({**home, "saving_per_month_usd": -3.0})
    assert dearer.endswith("renting is cheaper by $3.00 a month")
    assert "no local $/Mtok" in bring_home_line({**home, "owned_usd_per_mtok": None})


def test_usage_shows_rented_requests_beside_the_owned_with_their_spend(
    capsys: pytest.CaptureFixture[str],
) -> None:
    figures = dict.fromkeys(
        ("requests", "ok", "failed_over", "cancelled", "error", "prompt_tokens"), 1
    )
    figures |= {"cached_prompt_tokens": 0, "completion_tokens": 1}
    figures |= dict.fromkeys(("mean_ttft_s", "mean_node_ttft_s", "mean_duration_s"), 0.1)
    groups = [
        {"model": "gpt-4.1", "provider": None, **figures},
        {"model": "gpt-4.1", "provider": "cloud", "provider_usd": 4.0, **figures},
        {"model": "o3", "provider": "cloud", "provider_usd": 0.0, **figures},
    ]
    groups[2]["unpriced_models"] = ["o3"]
    usage_table({"by": "model", "since": "24h", "groups": groups})
    lines = capsys.readouterr().out.splitlines()
    own = next(line for line in lines if "gpt-4.1 " in line and "rented" not in line)
    assert own.rstrip(" │|").endswith("-")  # the office's own: no provider spend
    assert [line for line in lines if "gpt-4.1, rented from cloud" in line and "4.0000" in line]
    assert [line for line in lines if "o3, rented from cloud" in line and "0.0000 +?" in line]
