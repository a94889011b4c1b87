from __future__ import annotations

import ipaddress
import ssl
import stat
from pathlib import Path

import pytest
from cryptography import x509

from cluster.access import tls


def test_the_self_signed_certificate_is_made_once_naming_the_machine(tmp_path: Path) -> None:
    made, new = tls.self_signed(tmp_path / "config", ["192.0.2.7", "desk.local"])
    assert new and stat.S_IMODE(made.key.stat().st_mode) == 0o600
    again, new_again = tls.self_signed(tmp_path / "config", ["198.51.100.1"])
    assert not new_again and again.fingerprint == made.fingerprint  # a pin keeps holding
    cert = x509.load_pem_x509_certificate(made.cert.read_bytes())
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert set(names.get_values_for_type(x509.DNSName)) == {"localhost", "desk.local"}
    assert set(names.get_values_for_type(x509.IPAddress)) == {
        ipaddress.ip_address(a) for a in ("127.0.0.1", "::1", "192.0.2.7")
    }
    ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(made.cert, made.key)


def test_fingerprints_compare_whatever_their_spelling(tmp_path: Path) -> None:
    made, _ = tls.self_signed(tmp_path, [])
    pem = made.cert.read_bytes()
    fp = tls.fingerprint(pem)
    assert fp == tls.fingerprint(ssl.PEM_cert_to_DER_cert(pem.decode()))
    assert len(fp.split(":")) == 32
    assert tls.same_fingerprint(fp, "sha256:" + fp.replace(":", "").lower())
    assert not tls.same_fingerprint(fp, "00" * 32)


def test_a_key_that_is_not_the_certificates_is_refused(tmp_path: Path) -> None:
    one, _ = tls.self_signed(tmp_path / "one", [])
    other, _ = tls.self_signed(tmp_path / "other", [])
    assert tls.given(one.cert, one.key) == one
    with pytest.raises(tls.TlsError, match="cannot serve TLS"):
        tls.given(one.cert, other.key)
    with pytest.raises(tls.TlsError, match="cannot serve TLS"):
        tls.given(tmp_path / "missing.pem", one.key)


def test_a_wildcard_bind_names_every_address() -> None:
    assert tls.machine_names("192.0.2.7") == ["192.0.2.7"]
    names = tls.machine_names("0.0.0.0")
    assert "127.0.0.1" in names and all("%" not in n for n in names)
