"""Join tokens, the TLS identity derived from the cluster secret, and call signatures."""

from __future__ import annotations

import pickle

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from node_agent.trust import (
    CallVerifier,
    ClusterSecret,
    TokenError,
    decode_token,
    encode_token,
)

A = ClusterSecret(bytes(range(32)))
B = ClusterSecret(bytes(range(1, 33)))
METHOD = "/meterless.agent.v1.Agent/LoadModel"
NOW = 1_800_000_000.0


def test_token_round_trip() -> None:
    token = encode_token(A)
    assert token.startswith("mlj1.") and token.endswith(A.fingerprint)
    assert decode_token(token) == A
    assert decode_token(f"  {token}\n") == A  # pasted with the newline `cluster join-token` ends


@pytest.mark.parametrize(
    "text, says",
    [
        ("", "not a join token"),
        ("hello", "not a join token"),
        ("mlj2.AAAA.0000", "not a join token"),
        ("mlj1.AAAA", "not a join token"),
        ("mlj1.AAAA.0000000000000000", "wrong length"),
        ("mlj1.!!!!.0000000000000000", "not valid base64url"),
    ],
)
def test_bad_tokens_say_what_is_wrong(text: str, says: str) -> None:
    with pytest.raises(TokenError, match=says) as info:
        decode_token(text)
    assert "\n" not in str(info.value)


def test_a_damaged_token_is_caught_by_its_fingerprint() -> None:
    prefix, secret, fingerprint = encode_token(A).split(".")
    flipped = secret[:5] + ("A" if secret[5] != "A" else "B") + secret[6:]
    with pytest.raises(TokenError, match="fingerprint does not match"):
        decode_token(f"{prefix}.{flipped}.{fingerprint}")
    with pytest.raises(TokenError, match="fingerprint does not match"):
        decode_token(f"{prefix}.{secret}.{B.fingerprint}")


def test_a_bad_token_error_never_echoes_the_secret() -> None:
    _, secret, _ = encode_token(A).split(".")
    with pytest.raises(TokenError) as info:
        decode_token(f"mlj1.{secret}.ffffffffffffffff")
    assert secret not in str(info.value)


def test_derivation_is_deterministic_and_differs_per_secret() -> None:
    again = ClusterSecret(bytes(range(32)))  # a fresh object: nothing cached is shared
    assert again.certificate_pem == A.certificate_pem
    assert again.private_key_pem == A.private_key_pem
    assert A.certificate_pem != B.certificate_pem
    assert A.private_key_pem != B.private_key_pem
    assert A.fingerprint != B.fingerprint


def test_certificate_carries_the_derived_key_and_the_expected_name() -> None:
    cert = x509.load_pem_x509_certificate(A.certificate_pem)
    key = serialization.load_pem_private_key(A.private_key_pem, password=None)
    assert cert.public_key() == key.public_key()
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.DNSName) == ["meterless.cluster"]


def test_the_secret_stays_out_of_reprs_and_survives_pickling() -> None:
    assert A.secret.hex() not in repr(A)
    assert A.fingerprint  # computed, so cached derived objects exist when pickled
    assert pickle.loads(pickle.dumps(A)) == A


def test_a_fresh_signature_passes_once() -> None:
    verifier = CallVerifier(A)
    header = A.sign_call(METHOD, now=NOW, nonce=b"n" * 16)
    assert verifier.check(METHOD, header, now=NOW + 0.2) is None
    assert "replayed" in (verifier.check(METHOD, header, now=NOW + 0.4) or "")


def test_signatures_from_another_secret_or_for_another_method_fail() -> None:
    verifier = CallVerifier(A)
    forged = B.sign_call(METHOD, now=NOW, nonce=b"n" * 16)
    assert "bad call signature" in (verifier.check(METHOD, forged, now=NOW) or "")
    describe = A.sign_call("/meterless.agent.v1.Agent/Describe", now=NOW, nonce=b"m" * 16)
    assert "bad call signature" in (verifier.check(METHOD, describe, now=NOW) or "")


def test_a_signature_outside_the_window_fails_either_way() -> None:
    verifier = CallVerifier(A, window_s=60)
    old = A.sign_call(METHOD, now=NOW - 61, nonce=b"o" * 16)
    ahead = A.sign_call(METHOD, now=NOW + 61, nonce=b"p" * 16)
    assert "window" in (verifier.check(METHOD, old, now=NOW) or "")
    assert "window" in (verifier.check(METHOD, ahead, now=NOW) or "")
    edge = A.sign_call(METHOD, now=NOW - 59, nonce=b"q" * 16)
    assert verifier.check(METHOD, edge, now=NOW) is None


@pytest.mark.parametrize("header", [None, "", "abc", "1.2.3", "12.zz.00", "x.0123456789abcdef.00"])
def test_missing_or_malformed_signatures_fail(header: str | None) -> None:
    assert CallVerifier(A).check(METHOD, header, now=NOW) is not None


def test_nonces_are_forgotten_once_they_cannot_pass_the_window_again() -> None:
    verifier = CallVerifier(A, window_s=60)
    for i in range(100):
        header = A.sign_call(METHOD, now=NOW + i, nonce=i.to_bytes(16, "big"))
        assert verifier.check(METHOD, header, now=NOW + i) is None
    assert len(verifier._seen) <= 62  # the last minute's calls, not all of them
    replay = A.sign_call(METHOD, now=NOW + 99, nonce=(99).to_bytes(16, "big"))
    assert "replayed" in (verifier.check(METHOD, replay, now=NOW + 100) or "")
