"""API keys and the admin token: their format, their hashes, and who may do what. Pure.

A key reads `ml-<id>-<secret>`: the id is public (it names the key in the ledger and in
`cluster keys list`), the secret is shown once, when the key is made, and only its SHA-256 is
kept. A gateway checks a request with one dict lookup by id and one constant-time comparison of
digests, on the key table the controller last pushed to it; nothing on the request path touches
the disk or the controller.

    authorize(table, presented, model=..., inflight=..., required=...) -> Grant | raises
        Unauthorized (401)  no key where one is required, an unknown key, a wrong secret,
                            a revoked key, or keys required and none made yet
        Forbidden (403)     the key may not use this model
        RateLimited (429)   the key already has `max_concurrent` requests in flight here

    check_rented(grant, model=..., provider=..., local_only=...) -> None | raises
        Forbidden (403)     a local-only key (or any key, on a local-only cluster) asked for a
                            model a provider serves
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from cluster.errors import Forbidden, RateLimited, Unauthorized

PREFIX = "ml"
ADMIN_PREFIX = "mla"
ID_HEX = 12  # 48 bits: enough that two keys never share an id in one office
SECRET_HEX = 40  # 160 bits of secret
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_KEY = re.compile(rf"^{PREFIX}-([0-9a-f]{{{ID_HEX}}})-([0-9a-f]{{{SECRET_HEX}}})$")
RETRY_AFTER_S = 1.0  # when a slot frees is unknown; a second is what a short request takes


def digest(secret: str) -> str:
    """The hex SHA-256 of a secret: what is stored and compared, never the secret itself."""
    return hashlib.sha256(secret.encode()).hexdigest()


def format_key(key_id: str, secret: str) -> str:
    """The full key a client sends as its bearer token."""
    return f"{PREFIX}-{key_id}-{secret}"


def parse_key(key: str) -> tuple[str, str] | None:
    """(id, secret) of a well-formed key; None for anything else."""
    m = _KEY.match(key)
    return (m.group(1), m.group(2)) if m else None


def new_key(random_hex: str) -> tuple[str, str]:
    """(id, secret) cut from `ID_HEX + SECRET_HEX` random hex digits the caller drew."""
    if len(random_hex) != ID_HEX + SECRET_HEX or not re.fullmatch("[0-9a-f]+", random_hex):
        raise ValueError(f"need {ID_HEX + SECRET_HEX} lowercase hex digits")
    return random_hex[:ID_HEX], random_hex[ID_HEX:]


def bearer(authorization: str | None) -> str | None:
    """The token of an `Authorization: Bearer <token>` header; None when there is none."""
    if not authorization:
        return None
    scheme, _, token = authorization.strip().partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token else None


def admin_ok(presented: str | None, expected_digest: str) -> bool:
    """Whether `presented` is the admin token whose digest is `expected_digest`."""
    if not presented or not expected_digest:
        return False
    return hmac.compare_digest(digest(presented), expected_digest)


@dataclass(frozen=True, kw_only=True)
class KeyRecord:
    """One key as the controller stores it and pushes it to the gateways (no secret in it)."""

    key_id: str
    name: str
    digest: str
    models: tuple[str, ...] = ()  # empty: every model
    max_concurrent: int | None = None  # None: no limit
    local_only: bool = False  # its requests never go to a provider
    created_at: float = 0.0
    revoked_at: float | None = None

    @property
    def revoked(self) -> bool:
        """Whether the key was revoked."""
        return self.revoked_at is not None

    def allows(self, model: str) -> bool:
        """Whether the key may use `model`."""
        return not self.models or model in self.models

    def public(self) -> dict[str, object]:
        """What `cluster keys list` shows: everything but the digest."""
        return {
            "name": self.name,
            "key_id": self.key_id,
            "models": list(self.models),
            "max_concurrent": self.max_concurrent,
            "local_only": self.local_only,
            "created_at": self.created_at,
            "revoked_at": self.revoked_at,
        }


@dataclass(frozen=True)
class KeyTable:
    """Every key by id, with a version the gateways long-poll on (as for the node table)."""

    version: int = 0
    keys: Mapping[str, KeyRecord] = field(default_factory=dict)

    @classmethod
    def of(cls, version: int, records: Iterable[KeyRecord]) -> KeyTable:
        """A table of `records` at `version`."""
        return cls(version, {r.key_id: r for r in records})

    @property
    def active(self) -> int:
        """How many keys are not revoked."""
        return sum(not r.revoked for r in self.keys.values())


@dataclass(frozen=True)
class Grant:
    """A request let through: the key it came with (None on an open endpoint without one)."""

    key: KeyRecord | None = None

    @property
    def key_id(self) -> str | None:
        """The id the ledger records."""
        return self.key.key_id if self.key else None


def identify(table: KeyTable, presented: str | None, *, required: bool) -> Grant:
    """The key a request carries, checked; on an open endpoint an unknown one counts as none."""
    parsed = parse_key(presented) if presented else None
    record = table.keys.get(parsed[0]) if parsed else None
    valid = (
        record is not None
        and parsed is not None
        and hmac.compare_digest(digest(parsed[1]), record.digest)
    )
    if valid and record is not None and not record.revoked:
        return Grant(record)
    if not required:
        return Grant()
    if valid and record is not None:
        raise Unauthorized(f"The API key {record.key_id} was revoked.")
    if not table.active:
        raise Unauthorized(
            "This cluster requires an API key and none exists yet: the admin "
            "creates one with `cluster keys create NAME`."
        )
    if presented is None:
        raise Unauthorized("No API key given: send `Authorization: Bearer <key>`.")
    raise Unauthorized("Incorrect API key provided.")


def authorize(
    table: KeyTable,
    presented: str | None,
    *,
    model: str,
    inflight: Mapping[str, int],
    required: bool,
) -> Grant:
    """Whether a request for `model` may go on, and under which key; raises the 401/403/429."""
    grant = identify(table, presented, required=required)
    key = grant.key
    if key is None:
        return grant
    if not key.allows(model):
        raise Forbidden(
            f"The API key {key.key_id} may not use the model {model!r}; it may use "
            f"{', '.join(key.models)}.",
            param="model",
            code="model_not_allowed",
        )
    if key.max_concurrent is not None and inflight.get(key.key_id, 0) >= key.max_concurrent:
        raise RateLimited(
            f"The API key {key.key_id} already has {key.max_concurrent} requests "
            "in flight; retry when one has finished.",
            retry_after=RETRY_AFTER_S,
        )
    return grant


def check_rented(grant: Grant, *, model: str, provider: str, local_only: bool) -> None:
    """Raise 403 unless a request under `grant` may go to `provider` for `model`: a local-only
    key's never may, nor, where the cluster is local-only (`local_only`), anyone's."""
    key = grant.key
    if key is not None and key.local_only:
        who = f"The API key {key.key_id} is local-only"
    elif local_only:
        who = "This cluster is local-only"
    else:
        return
    raise Forbidden(
        f"{who}; {model} is served by provider {provider}, and requests under it never go to "
        "a provider.",
        param="model",
        code="local_only",
    )


def visible_models(grant: Grant, models: Iterable[str]) -> list[str]:
    """The models `/v1/models` shows to a request under `grant`."""
    return [m for m in models if grant.key is None or grant.key.allows(m)]
