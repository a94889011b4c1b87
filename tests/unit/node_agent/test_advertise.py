"""Which addresses a node announces, and what its TXT record says."""

from __future__ import annotations

from node_agent.advertise import Adapter, Advertisement, service_name, txt_record, usable_ipv4

ADAPTERS = [
    Adapter("lo", ("127.0.0.1",)),
    Adapter("en0", ("192.168.1.20",)),
    Adapter("en1", ("169.254.3.4",)),
    Adapter("utun0", ("10.8.0.2", "10.8.0.3")),
    Adapter("en2", ()),
]


def test_every_routable_address_by_default() -> None:
    assert usable_ipv4(ADAPTERS) == ("192.168.1.20", "10.8.0.2", "10.8.0.3")


def test_named_interfaces_only() -> None:
    assert usable_ipv4(ADAPTERS, ["en0"]) == ("192.168.1.20",)
    assert usable_ipv4(ADAPTERS, ["lo"]) == ("127.0.0.1",)
    assert usable_ipv4(ADAPTERS, ["en2"]) == ()


def test_loopback_when_there_is_nothing_else() -> None:
    assert usable_ipv4([Adapter("lo", ("127.0.0.1",)), Adapter("en1", ("169.254.3.4",))]) == (
        "127.0.0.1",
    )


def test_txt_record_names_the_node_not_its_state() -> None:
    ad = Advertisement(
        node_id="ab12",
        name="mini-" + "x" * 300,
        port=50151,
        engines=("vllm", "mlx"),
        protocol="1.0",
    )
    txt = txt_record(ad)
    assert txt["node_id"] == "ab12" and txt["proto"] == "1.0" and txt["engines"] == "vllm,mlx"
    assert txt["name"].startswith("mini-") and len(txt["name"].encode()) <= 200
    assert service_name("ab12") == "ab12._meterless._tcp.local."
