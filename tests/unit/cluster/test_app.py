"""The gateway deployment's bounds at Serve's proxy (several gateway replicas)."""

from __future__ import annotations

from cluster.app import PROXY_QUEUE, GatewayDeployment
from cluster.gateway.front import DEFAULT_LIMITS


def test_the_proxy_queues_a_bounded_number_of_requests_and_refuses_the_rest() -> None:
    # A replica is sent no more than its front answers at once (the front's own 503 is the
    # dialect's), and the proxy's queue in front of it is bounded, past which Serve says 503.
    assert GatewayDeployment.max_ongoing_requests == DEFAULT_LIMITS.max_requests
    assert GatewayDeployment.max_queued_requests == PROXY_QUEUE > 0
    backpressure = GatewayDeployment.backpressure_config
    assert backpressure.status_code == 503 and backpressure.retry_after_s
