"""`cluster up`'s defaults: who may use the endpoint without a key (cluster/access/exposure.py)."""

from __future__ import annotations

import pytest

from cluster.access.exposure import decide, is_loopback


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.53", "::1", "localhost"])
def test_loopback_addresses(host: str) -> None:
    assert is_loopback(host)


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.168.1.10", "head.local", ""])
def test_other_addresses(host: str) -> None:
    assert not is_loopback(host)


def test_loopback_demo_is_open_and_says_so() -> None:
    e = decide("127.0.0.1", demo=True, insecure=False)
    assert not e.keys_required and e.metrics_open and not e.warn
    assert "optional" in e.notice


@pytest.mark.parametrize("host", ["0.0.0.0", "192.168.1.10"])
@pytest.mark.parametrize("demo", [False, True])
def test_off_loopback_keys_are_required(host: str, demo: bool) -> None:
    e = decide(host, demo=demo, insecure=False)
    assert e.keys_required and not e.metrics_open and "cluster keys create" in e.notice


def test_loopback_without_demo_requires_keys_but_keeps_metrics_open() -> None:
    e = decide("127.0.0.1", demo=False, insecure=False)
    assert e.keys_required and e.metrics_open


@pytest.mark.parametrize("host", ["0.0.0.0", "127.0.0.1"])
def test_insecure_is_open_and_warns(host: str) -> None:
    e = decide(host, demo=False, insecure=True)
    assert not e.keys_required and e.warn and "--insecure" in e.notice
    assert e.metrics_open == (host == "127.0.0.1")
