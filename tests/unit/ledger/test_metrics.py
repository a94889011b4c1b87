"""The metrics text (ledger/metrics.py): vLLM-style families, histograms, request counts."""

from __future__ import annotations

import pytest

from cluster.ledger.metrics import RequestCounts, _Histogram, render
from cluster.ledger.rows import Outcome, UsageRow, Values
from cluster.types import NodeId, NodeState, NodeTable, NodeView


def _row(node: str | None, *, tokens: int = 3, outcome: Outcome = Outcome.OK) -> Values:
    return UsageRow(
        request_id="r",
        at=0.0,
        key_id=None,
        model="demo",
        node_id=node,
        endpoint="chat",
        stream=True,
        prompt_tokens=7,
        completion_tokens=tokens,
        ttft_s=0.05,
        duration_s=0.4,
        outcome=outcome,
        attempts=1,
    ).values()


def test_metrics_text_in_vllm_style() -> None:
    counts = RequestCounts()
    counts.observe([_row("n1")])
    table = NodeTable(
        version=1,
        nodes=(
            NodeView(
                node_id=NodeId("n1"),
                name="mini",
                address="a",
                engines=("mlx",),
                state=NodeState.READY,
                models=(),
                decode_tps=42.0,
                tps_measured=True,
            ),
        ),
    )
    snapshot = {
        "requests": counts,
        "nodes": [
            {
                "node_id": "n1",
                "name": "mini",
                "cost_usd": {"total": 1.5},
                "savings_usd": -0.5,
                "cloud_equivalent_usd": 1.0,
                "live": {"busy_ratio": 0.5, "watts": None},
                "profile": {"idle_watts": 10.0, "busy_watts": 50.0},
            }
        ],
    }
    text = render(snapshot, table).decode()
    for line in (
        'meterless:request_success_total{model="demo",node="mini"} 1.0',
        'meterless:requests_total{model="demo",node="mini",outcome="ok"} 1.0',
        'meterless:prompt_tokens_total{model="demo",node="mini"} 7.0',
        'meterless:generation_tokens_total{model="demo",node="mini"} 3.0',
        'meterless:time_to_first_token_seconds_bucket{le="0.06",model="demo",node="mini"} 1.0',
        'meterless:e2e_request_latency_seconds_count{model="demo",node="mini"} 1.0',
        'meterless:node_decode_tokens_per_second{measured="true",node="mini"} 42.0',
        'meterless:node_busy_ratio{node="mini"} 0.5',
        'meterless:node_power_watts{node="mini",source="configured"} 30.0',
        'meterless:cost_usd_total{node="mini"} 1.5',
        'meterless:savings_usd{node="mini"} -0.5',
    ):
        assert line in text, line


def test_histogram_buckets_are_cumulative_and_include_their_bound() -> None:
    h = _Histogram((0.1, 1.0))
    for value in (0.1, 0.5, 1.0, 7.0):
        h.observe(value)
    assert h.buckets() == [("0.1", 1), ("1.0", 3), ("+Inf", 4)]
    assert h.total == pytest.approx(8.6)


def _generated(text: str) -> list[str]:
    return [
        line for line in text.splitlines() if line.startswith("meterless:generation_tokens_total")
    ]


def test_request_counts_are_labelled_by_the_node_name_known_when_read() -> None:
    counts = RequestCounts()
    counts.observe([_row("id-1", tokens=5)] * 3)
    counts.observe([_row("id-2", tokens=1), _row(None, tokens=0, outcome=Outcome.ERROR)])
    unnamed = render({"requests": counts, "nodes": []}, NodeTable()).decode()
    assert _generated(unnamed) == [
        'meterless:generation_tokens_total{model="demo",node="id-1"} 15.0',
        'meterless:generation_tokens_total{model="demo",node="id-2"} 1.0',
        'meterless:generation_tokens_total{model="demo",node=""} 0.0',
    ]
    assert 'meterless:requests_total{model="demo",node="",outcome="error"} 1.0' in unnamed
    # id-1 known to the ledger, id-2 in the table: a node that got a new id under its old name
    # is one series
    table = NodeTable(
        version=1,
        nodes=(
            NodeView(
                node_id=NodeId("id-2"),
                name="mini",
                address="a:1",
                engines=("mlx",),
                state=NodeState.READY,
                models=("demo",),
            ),
        ),
    )
    snapshot = {
        "requests": counts,
        "nodes": [
            {
                "node_id": "id-1",
                "name": "mini",
                "cost_usd": {"total": 0.0},
                "cloud_equivalent_usd": 0.0,
                "savings_usd": 0.0,
            }
        ],
    }
    named = render(snapshot, table).decode()
    assert _generated(named) == [
        'meterless:generation_tokens_total{model="demo",node="mini"} 16.0',
        'meterless:generation_tokens_total{model="demo",node=""} 0.0',
    ]
    assert 'meterless:e2e_request_latency_seconds_count{model="demo",node="mini"} 4.0' in named


def test_no_request_families_without_counts() -> None:
    text = render({"nodes": []}, NodeTable()).decode()
    assert "meterless:requests_total{" not in text and "meterless:cost_usd" in text


def test_rented_requests_are_their_providers_series_not_a_nodes() -> None:
    counts = RequestCounts()
    counts.observe([_row("n1"), _row("provider:cloud", tokens=4), _row("provider:cloud")])
    snapshot = {
        "requests": counts,
        "nodes": [],
        "rented": [{"provider": "cloud", "cost_usd": 0.25}],
    }
    text = render(snapshot, NodeTable()).decode()
    for line in (
        'meterless:rented_requests_total{model="demo",outcome="ok",provider="cloud"} 2.0',
        'meterless:rented_request_success_total{model="demo",provider="cloud"} 2.0',
        'meterless:rented_prompt_tokens_total{model="demo",provider="cloud"} 14.0',
        'meterless:rented_generation_tokens_total{model="demo",provider="cloud"} 7.0',
        'meterless:rented_e2e_request_latency_seconds_count{model="demo",provider="cloud"} 2.0',
        'meterless:rented_cost_usd_total{provider="cloud"} 0.25',
        'meterless:generation_tokens_total{model="demo",node="n1"} 3.0',
    ):
        assert line in text, line
    assert "provider:cloud" not in text


def test_no_rented_families_before_a_provider_served() -> None:
    counts = RequestCounts()
    counts.observe([_row("n1")])
    text = render({"requests": counts, "nodes": []}, NodeTable()).decode()
    assert "rented" not in text
