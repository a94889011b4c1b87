"""A provider's words checked: kind, base URL, prices read exactly, keys fit for a header."""

from __future__ import annotations

from fractions import Fraction as F

import pytest

from cluster.ledger.cost import Price
from cluster.providers import specs
from cluster.providers.specs import (
    Provider,
    ProviderError,
    parse_target,
    route_from_json,
    route_json,
)


def test_prices_are_read_exactly_with_an_optional_cached_price() -> None:
    assert specs.parse_price("gpt-4.1=2.00,8,0.5") == (
        "gpt-4.1",
        Price(input=F(2), output=F(8), cached_input=F(1, 2)),
    )
    assert specs.parse_price(" m = 0.15 , 0.6 ") == ("m", Price(input=F(3, 20), output=F(3, 5)))


@pytest.mark.parametrize(
    "text", ["m", "m=1", "=1,2", "m=1,2,3,4", "m=-1,2", "m=1,two", "m=1e3,2", "m=,2"]
)
def test_a_bad_price_names_the_form(text: str) -> None:
    with pytest.raises(ProviderError, match="bad price"):
        specs.parse_price(text)


def test_kinds_and_names() -> None:
    assert specs.check_kind("anthropic") == "anthropic"
    with pytest.raises(ProviderError, match="unknown kind 'azure'; known: openai, anthropic"):
        specs.check_kind("azure")
    assert specs.check_name("open-ai.v1_b") == "open-ai.v1_b"
    for bad in ("", ".hidden", "a/b", "..", "x" * 65, "a b"):
        with pytest.raises(ProviderError, match="cannot name a provider"):
            specs.check_name(bad)


def test_base_urls_are_http_without_credentials() -> None:
    assert specs.check_base_url("https://api.openai.com/v1/") == "https://api.openai.com/v1"
    assert specs.check_base_url("http://127.0.0.1:8001") == "http://127.0.0.1:8001"
    for bad in ("api.openai.com", "ftp://host", "http://", "http://h:port", "https://h/v1?x=1"):
        with pytest.raises(ProviderError, match="bad base URL"):
            specs.check_base_url(bad)
    with pytest.raises(ProviderError, match="must not carry credentials"):
        specs.check_base_url("https://user:sk-abc@api.example.com")


def test_keys_must_fit_in_a_header() -> None:
    assert specs.check_key("  sk-abc\n", "FILE") == "sk-abc"
    with pytest.raises(ProviderError, match="FILE holds no key"):
        specs.check_key("\n", "FILE")
    with pytest.raises(ProviderError, match="more than one line"):
        specs.check_key("sk-abc\nsk-def", "FILE")


def test_json_shows_whether_a_key_is_set_and_round_trips() -> None:
    p = Provider(
        name="oa",
        kind="openai",
        base_url="http://h/v1",
        prices={"m": Price(input=F(3, 20), output=F(3, 5), cached_input=F(3, 40))},
    )
    data = specs.provider_json(p, key_set=False)
    assert data == {
        "name": "oa",
        "kind": "openai",
        "base_url": "http://h/v1",
        "key_set": False,
        "prices": {"m": {"input": "0.15", "output": "0.6", "cached_input": "0.075"}},
    }
    assert specs.from_json(data) == p


def test_decimals_are_written_back_as_given() -> None:
    assert [specs.decimal(F(x)) for x in ("2", "0.15", "0.075", "12.5")] == [
        "2",
        "0.15",
        "0.075",
        "12.5",
    ]


def test_an_overflow_route_round_trips_and_a_served_one_stays_as_it_was() -> None:
    served = parse_target("big", "oa")
    assert not served.overflow and route_json(served) == {
        "model": "big",
        "provider": "oa",
        "remote_model": "big",
    }
    spill = parse_target("demo", "oa:gpt-x", overflow_wait_s=0.5)
    assert spill.overflow and route_from_json(route_json(spill)) == spill
    with pytest.raises(ProviderError, match="overflow wait"):
        parse_target("demo", "oa", overflow_wait_s=-1)
