"""The cloud reference price table: the shipped file, overrides, exact prices."""

from __future__ import annotations

import json
import logging
from fractions import Fraction as F
from pathlib import Path

import pytest

from cluster.ledger import prices


def test_the_shipped_table_is_dated_and_complete() -> None:
    table = prices.load(None)
    assert table.as_of and table.origin == "shipped"
    assert table.default in table.prices
    assert all(ref in table.prices for _, ref in table.compare)
    assert table.prices["gpt-4o-mini"].input == F(15, 100)  # read exactly, not as a float


def test_models_map_to_references_by_name_or_pattern() -> None:
    table = prices.load(None)
    assert table.reference("demo") == table.default
    assert table.reference("Llama-3.3-70B-Instruct-4bit") == "gpt-4o"
    assert table.price("demo") == table.prices[table.default]


def test_an_override_adds_prices_and_mappings(tmp_path: Path) -> None:
    (tmp_path / "cloud_prices.json").write_text(
        json.dumps(
            {
                "as_of": "2031-01-01",
                "prices": {"my-cloud": {"input": 0.5, "output": "1.5"}},
                "compare": {"models": {"demo": "my-cloud", "*70B*": "gpt-4o-mini"}},
            }
        )
    )
    table = prices.load(tmp_path)
    assert table.as_of == "2031-01-01" and table.origin.endswith("cloud_prices.json")
    assert table.reference("demo") == "my-cloud"
    assert table.reference("x-70B") == "gpt-4o-mini"  # the user's entries come first
    assert table.price("demo").input == F(1, 2) and table.price("demo").output == F(3, 2)
    assert "gpt-4o" in table.prices and table.default == prices.load(None).default


@pytest.mark.parametrize(
    "content",
    [
        "{not json",
        '{"compare": {"default": "nowhere"}}',
        '{"prices": {"x": {"input": "abc", "output": 1}}}',
        '{"prices": {"x": {"input": -1, "output": 1}}}',
    ],
)
def test_a_bad_override_is_ignored_with_an_error(
    tmp_path: Path, content: str, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "cloud_prices.json").write_text(content)
    with caplog.at_level(logging.ERROR):
        table = prices.load(tmp_path)
    assert table.origin == "shipped"
    assert "cloud_prices.json" in caplog.text
