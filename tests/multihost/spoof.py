"""A host on the LAN lying over mDNS, run inside its namespace:

    python -m tests.multihost.spoof VICTIM_NODE_ID ADDRESS [--flood N] [--rounds R] [--leave]

For the node VICTIM_NODE_ID it sends goodbyes (TTL 0), then re-announces it at ADDRESS (this
host's, where no agent listens), with N made-up agents, each a service of its own at ADDRESS.
Every packet goes out `rounds` times, a second apart: what one lost packet would not do.
`--leave` only says goodbye for the made-up agents.
Nothing here is the agent's own code: anyone on the LAN can send these packets.
"""

from __future__ import annotations

import argparse
import socket
import time

from zeroconf import DNSOutgoing, ServiceInfo, Zeroconf
from zeroconf.const import _FLAGS_AA, _FLAGS_QR_RESPONSE

from node_agent.advertise import SERVICE_TYPE, service_name
from node_agent.proto import PROTOCOL_VERSION

PORT = 50999  # where nothing listens on the spoofing host


def service(node_id: str, address: str) -> ServiceInfo:
    """An agent's service as the agent would announce it, at `address`."""
    return ServiceInfo(
        SERVICE_TYPE,
        service_name(node_id),
        addresses=[socket.inet_aton(address)],
        port=PORT,
        properties={"proto": PROTOCOL_VERSION, "node_id": node_id},
        server=f"spoof-{node_id}.local.",
    )


def packet(infos: list[ServiceInfo], ttl: int | None) -> DNSOutgoing:
    """One response carrying every record of `infos` (their TTL, or `ttl`: 0 says goodbye)."""
    out = DNSOutgoing(_FLAGS_QR_RESPONSE | _FLAGS_AA)
    for info in infos:
        for record in (
            info.dns_pointer(ttl),
            info.dns_service(ttl),
            info.dns_text(ttl),
            *info.dns_addresses(ttl),
        ):
            out.add_answer_at_time(record, 0)
    return out


def main() -> None:
    """Lie about the victim, then flood."""
    p = argparse.ArgumentParser()
    p.add_argument("victim")
    p.add_argument("address")
    p.add_argument("--flood", type=int, default=400)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--leave", action="store_true", help="say goodbye for the made-up agents")
    args = p.parse_args()
    victim = service(args.victim, args.address)
    fakes = [service(f"fake{i:05d}", args.address) for i in range(args.flood)]
    zc = Zeroconf()
    try:
        if args.leave:
            for i in range(0, len(fakes), 20):
                zc.send(packet(fakes[i : i + 20], 0))
            time.sleep(1.0)  # zeroconf sends from its own thread
            return
        for _ in range(args.rounds):
            zc.send(packet([victim], 0))  # the victim said goodbye
            time.sleep(1.0)
        # A goodbye takes effect when the browser next sweeps its cache (every 10 s), unless the
        # records come again first.
        time.sleep(12.0)
        for _ in range(args.rounds):
            zc.send(packet([victim], None))  # and is now here
            for i in range(0, len(fakes), 20):  # a few services to a packet
                zc.send(packet(fakes[i : i + 20], None))
            time.sleep(1.0)
    finally:
        zc.close()


if __name__ == "__main__":
    main()
