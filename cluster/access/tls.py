"""TLS on the HTTP endpoint: a certificate the operator gives, or one `cluster up` makes once.

Without TLS, API keys, the admin token and every prompt cross the LAN in clear. `cluster up
--tls-cert FILE --tls-key FILE` serves the operator's certificate; `--tls self-signed` makes an
ECDSA certificate once in the config dir (`tls-cert.pem`, and `tls-key.pem` owner-only) naming
this machine's addresses, and prints its SHA-256 fingerprint: clients trust that file as their CA
or pin the fingerprint (`cluster ... --fingerprint`), as with an SSH host key.
"""

from __future__ import annotations

import datetime
import hashlib
import ipaddress
import socket
import ssl
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from cluster.paths import private_dir, write_private

CERT_FILE = "tls-cert.pem"
KEY_FILE = "tls-key.pem"
VALID_DAYS = 3650
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")


class TlsError(Exception):
    """A certificate or key that cannot be served, or a fingerprint that does not match."""


@dataclass(frozen=True)
class EndpointTls:
    """The files the endpoint serves HTTPS with."""

    cert: Path
    key: Path

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.cert.read_bytes())


def fingerprint(cert: bytes) -> str:
    """SHA-256 of a certificate (PEM or DER) as colon-separated hex, as browsers show it."""
    der = ssl.PEM_cert_to_DER_cert(cert.decode()) if cert.lstrip().startswith(b"-----") else cert
    digest = hashlib.sha256(der).hexdigest().upper()
    return ":".join(digest[i : i + 2] for i in range(0, len(digest), 2))


def same_fingerprint(a: str, b: str) -> bool:
    """Whether two fingerprints name one certificate, whatever their case, colons or prefix."""

    def norm(f: str) -> str:
        return f.strip().upper().removeprefix("SHA256:").replace(":", "")

    return norm(a) == norm(b)


def given(cert: Path, key: Path) -> EndpointTls:
    """The operator's certificate and key, checked to load together before anything starts."""
    try:
        ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as exc:
        raise TlsError(f"cannot serve TLS with {cert} and {key}: {exc}") from None
    return EndpointTls(cert, key)


def self_signed(directory: Path, names: Iterable[str]) -> tuple[EndpointTls, bool]:
    """The config dir's own certificate, made on first use for `names` (and loopback);
    (its files, whether it was made now). Kept afterwards, so a pinned fingerprint holds."""
    tls = EndpointTls(directory / CERT_FILE, directory / KEY_FILE)
    if tls.cert.exists() and tls.key.exists():
        return tls, False
    private_dir(directory)
    key = ec.generate_private_key(ec.SECP256R1())
    tls.key.unlink(missing_ok=True)
    write_private(
        tls.key,
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ).decode(),
    )
    tls.cert.write_bytes(_certificate(key, names).public_bytes(serialization.Encoding.PEM))
    return tls, True


def _certificate(key: ec.EllipticCurvePrivateKey, names: Iterable[str]) -> x509.Certificate:
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "meterless endpoint")])
    now = datetime.datetime.now(datetime.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=VALID_DAYS))
        .add_extension(x509.SubjectAlternativeName(_alt_names(names)), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(key, hashes.SHA256())
    )


def _alt_names(names: Iterable[str]) -> list[x509.GeneralName]:
    out: list[x509.GeneralName] = []
    for name in dict.fromkeys([*LOOPBACK_NAMES, *names]):
        if not name or name in ("0.0.0.0", "::"):
            continue
        try:
            out.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            out.append(x509.DNSName(name))
    return out


def machine_names(host: str) -> list[str]:
    """What a certificate for an endpoint bound to `host` should name: the host itself, and for
    a wildcard bind this machine's name and every address of its interfaces."""
    if host not in ("0.0.0.0", "::", ""):
        return [host]
    import ifaddr

    addresses = [
        str(ip.ip[0] if isinstance(ip.ip, tuple) else ip.ip)
        for adapter in ifaddr.get_adapters()
        for ip in adapter.ips
    ]
    return [socket.gethostname(), *(a for a in addresses if "%" not in a)]


def pinned_context(cert: bytes) -> ssl.SSLContext:
    """A client context that trusts exactly `cert` (PEM or DER), whatever name it carries."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN
    if cert.lstrip().startswith(b"-----"):
        ctx.load_verify_locations(cadata=cert.decode())
    else:
        ctx.load_verify_locations(cadata=cert)
    return ctx


def peer_certificate(host: str, port: int, timeout_s: float = 10.0) -> bytes:
    """The certificate (DER) a TLS server presents, read without trusting it, so that it can be
    compared with a pinned fingerprint before anything secret is sent."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    with (
        socket.create_connection((host, port), timeout=timeout_s) as sock,
        ctx.wrap_socket(sock, server_hostname=host) as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    if not der:
        raise TlsError(f"{host}:{port} presented no certificate")
    return der
