"""The controller's knobs, apart: the controller and its node sessions both read them."""

from __future__ import annotations

from dataclasses import dataclass, field

from node_agent.trust import ClusterSecret


@dataclass(frozen=True, kw_only=True)
class ControllerConfig:
    """Knobs of the controller; defaults suit an office LAN."""

    peers: tuple[str, ...] = ()
    mdns: bool = True
    mdns_interfaces: tuple[str, ...] = ()
    status_interval_ms: int = 250
    status_silence_s: float = 2.0  # no status for this long: reconnect (a cut link is silent)
    describe_timeout_s: float = 2.0
    retry_min_s: float = 0.25
    retry_max_s: float = 2.0
    tick_s: float = 0.25
    # A table that differs from the gateways' only in nodes' load, memory and measured rates
    # reaches them at most this often; any other change at once. Under load every status sample
    # (status_interval_ms) moves those, and each new version is a call from every gateway
    # replica and the table pickled for it.
    measured_push_s: float = 1.0
    # A new controller (first start, or Serve restarting it) holds its first table until every
    # source has been tried and every node reached has reported, at most this long, so that
    # gateways keep routing on their last table rather than on a half-discovered one.
    settle_max_s: float = 5.0
    mdns_answer_s: float = 1.0  # how long mDNS answers to the first query take to arrive
    data_dir: str = ""  # where the ledger file lives; "" keeps it in memory
    config_dir: str = ""  # where a cloud_prices.json may override the shipped one
    shutdown_token: str = ""  # what `cluster up` shows to have the ledger flushed; "": never
    # With a secret, agents are dialled over TLS and must prove they hold it; None: plaintext.
    cluster_secret: ClusterSecret | None = field(default=None, repr=False)
    plaintext_agents: bool = False  # also admit agents without a join token (insecure)
    # mDNS is unauthenticated: anyone on the LAN can announce sources. At most this many are
    # dialled, and one that has streamed no status for mdns_forget_s is forgotten.
    max_mdns_sources: int = 256
    mdns_forget_s: float = 600.0
