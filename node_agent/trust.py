"""The cluster secret: join tokens, the TLS identity derived from it, and per-call signatures.

Pure: no sockets, no files, no clock (callers pass `now`). Both sides of the gRPC link use it:
the agent to guard its server, the controller and gateways (cluster/node_client.py) to dial.

Design. One 32-byte secret per cluster. From it, HKDF derives
  - a P-256 private key and a self-signed certificate (fixed names, fixed dates, deterministic
    ECDSA), the same bytes on every holder. Each side presents it and trusts nothing else, so a
    TLS handshake completes only between two holders of the secret: mutual authentication and
    encryption without a CA. The secret itself never goes on the wire, only TLS signatures.
  - an HMAC key for a per-call signature (method, timestamp, nonce) carried in metadata. The agent
    refuses a signature it has seen (nonce cache) or one outside the clock window, so a call
    recorded and sent again is refused even by an agent that holds the same secret.
A join token is the secret plus the fingerprint of that certificate (the identity the agent will
be asked to trust), so a mistyped token is caught at start rather than as failing handshakes.
"""

from __future__ import annotations

import base64
import binascii
import datetime
import hashlib
import hmac
import re
from collections import deque
from dataclasses import dataclass, field
from functools import cached_property

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.x509.oid import NameOID

SECRET_BYTES = 32
TOKEN_PREFIX = "mlj1"
FINGERPRINT_HEX = 16
TLS_NAME = "meterless.cluster"  # the name in the certificate, and the name every channel expects
SIGNATURE_HEADER = "x-meterless-call"
WINDOW_S = 60.0  # a signature older or newer than this (clock skew included) is refused
_P256_ORDER = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551
_NOT_BEFORE = datetime.datetime(2000, 1, 1, tzinfo=datetime.UTC)
_NOT_AFTER = datetime.datetime(9999, 12, 31, tzinfo=datetime.UTC)


class TokenError(ValueError):
    """A join token that cannot be used; the message is one line, fit for a CLI."""


def _hkdf(secret: bytes, purpose: str, length: int = 32) -> bytes:
    return HKDF(
        algorithm=hashes.SHA256(),
        length=length,
        salt=b"meterless cluster secret v1",
        info=purpose.encode(),
    ).derive(secret)


@dataclass(frozen=True)
class ClusterSecret:
    """The secret, and everything derived from it; its repr never shows the secret."""

    secret: bytes = field(repr=False)

    def __reduce__(self) -> tuple[type[ClusterSecret], tuple[bytes]]:
        # Pickle (Ray ships configs to its workers) the secret alone, not the derived key objects.
        return (ClusterSecret, (self.secret,))

    def __post_init__(self) -> None:
        if len(self.secret) != SECRET_BYTES:
            raise TokenError(f"a cluster secret has {SECRET_BYTES} bytes, not {len(self.secret)}")

    @cached_property
    def _private_key(self) -> ec.EllipticCurvePrivateKey:
        # A scalar in [1, n-1]: 48 bytes of HKDF output reduced mod n-1 has negligible bias.
        value = int.from_bytes(_hkdf(self.secret, "tls key", 48), "big") % (_P256_ORDER - 1) + 1
        return ec.derive_private_key(value, ec.SECP256R1())

    @cached_property
    def certificate_pem(self) -> bytes:
        """The cluster's certificate: every holder of the secret derives these same bytes."""
        key = self._private_key
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, TLS_NAME)])
        serial = int.from_bytes(_hkdf(self.secret, "tls serial", 16), "big") >> 1
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(serial)
            .not_valid_before(_NOT_BEFORE)
            .not_valid_after(_NOT_AFTER)
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(TLS_NAME)]), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256(), ecdsa_deterministic=True)
        )
        return cert.public_bytes(serialization.Encoding.PEM)

    @cached_property
    def private_key_pem(self) -> bytes:
        """The derived private key (PKCS#8 PEM), for the TLS credentials only."""
        return self._private_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )

    @cached_property
    def fingerprint(self) -> str:
        """Short hex id of the certificate: names the cluster in tokens and logs, safely."""
        der = x509.load_pem_x509_certificate(self.certificate_pem).public_bytes(
            serialization.Encoding.DER
        )
        return hashlib.sha256(der).hexdigest()[:FINGERPRINT_HEX]

    @cached_property
    def _call_key(self) -> bytes:
        return _hkdf(self.secret, "call signature")

    def sign_call(self, method: str, *, now: float, nonce: bytes) -> str:
        """The signature header for one call of `method` made at `now` (unix seconds)."""
        ms = int(now * 1000)
        return f"{ms}.{nonce.hex()}.{self._mac(method, ms, nonce.hex())}"

    def _mac(self, method: str, ms: int, nonce_hex: str) -> str:
        message = f"{method}\n{ms}\n{nonce_hex}".encode()
        return hmac.new(self._call_key, message, hashlib.sha256).hexdigest()


def encode_token(secret: ClusterSecret) -> str:
    """The join token: `mlj1.<secret, base64url>.<certificate fingerprint>`."""
    b64 = base64.urlsafe_b64encode(secret.secret).rstrip(b"=").decode()
    return f"{TOKEN_PREFIX}.{b64}.{secret.fingerprint}"


def decode_token(text: str) -> ClusterSecret:
    """The secret in a join token; TokenError (one line, never echoing the token) otherwise."""
    parts = text.strip().split(".")
    if len(parts) != 3 or parts[0] != TOKEN_PREFIX:
        raise TokenError(
            f"not a join token (expected {TOKEN_PREFIX}.<secret>.<fingerprint>; "
            "print one with `cluster join-token` on the head)"
        )
    _, b64, fingerprint = parts
    try:  # the decoder skips characters outside the alphabet; a token with any is damaged
        if not re.fullmatch(r"[A-Za-z0-9_-]+", b64):
            raise ValueError(b64)
        raw = base64.urlsafe_b64decode(b64 + "=" * (-len(b64) % 4))
    except (binascii.Error, ValueError):
        raise TokenError("the join token's secret is not valid base64url") from None
    if len(raw) != SECRET_BYTES:
        raise TokenError("the join token's secret has the wrong length (was it cut short?)")
    secret = ClusterSecret(raw)
    if not hmac.compare_digest(fingerprint.lower(), secret.fingerprint):
        raise TokenError("the join token is damaged: its fingerprint does not match its secret")
    return secret


@dataclass
class CallVerifier:
    """Checks call signatures on the agent: valid MAC, inside the window, never seen before."""

    secret: ClusterSecret = field(repr=False)
    window_s: float = WINDOW_S
    _seen: set[str] = field(default_factory=set, repr=False)
    _order: deque[tuple[float, str]] = field(default_factory=deque, repr=False)

    def check(self, method: str, header: str | None, *, now: float) -> str | None:
        """None when the call may proceed, else why not (one line, safe to log and return)."""
        if not header:
            return "no call signature: the caller does not hold the cluster secret"
        parts = header.split(".")
        if (
            len(parts) != 3
            or not parts[0].isdigit()
            or not re.fullmatch(r"[0-9a-f]{16,64}", parts[1])
        ):
            return "malformed call signature"
        ms, nonce, mac = int(parts[0]), parts[1], parts[2]
        if not hmac.compare_digest(mac, self.secret._mac(method, ms, nonce)):
            return "bad call signature: the caller does not hold the cluster secret"
        if abs(now - ms / 1000) > self.window_s:
            return f"call signature outside the {self.window_s:.0f}s window (clock skew or replay)"
        self._forget(now)
        if nonce in self._seen:
            return "replayed call: this signature was used before"
        self._seen.add(nonce)
        self._order.append((ms / 1000, nonce))
        return None

    def _forget(self, now: float) -> None:
        # A nonce older than the window cannot pass the time check again, so it need not be kept.
        # Calls arrive roughly in time order; one kept a little longer than needed is harmless.
        while self._order and now - self._order[0][0] > self.window_s:
            self._seen.discard(self._order.popleft()[1])
