"""What `cluster up` decides before it starts anything."""

from __future__ import annotations

import pytest

from cluster.up import UpOptions, direct_ingress


def test_one_gateway_replica_on_its_own_ray_listens_on_the_endpoint_itself() -> None:
    assert direct_ingress(UpOptions(port=8000))
    # Several replicas cannot share the port; a joined Ray is configured by whoever started it.
    assert not direct_ingress(UpOptions(port=8000, gateway_replicas=2))
    assert not direct_ingress(UpOptions(port=8000, ray_address="10.0.0.2:6379"))
    assert not direct_ingress(UpOptions(port=0))


def test_the_admin_may_keep_serves_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RAY_SERVE_ENABLE_DIRECT_INGRESS", "0")
    assert not direct_ingress(UpOptions(port=8000))
