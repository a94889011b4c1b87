"""The dashboard's session: a signed cookie given for the admin token, and its CSRF token.

Pure. A session is `<expires>.<nonce>.<signature>`, signed with a key every gateway replica
derives alike (from the cluster secret and the admin token's digest), so any replica accepts a
session another one gave, and changing the admin token ends every session. The CSRF token is
derived from the session's nonce: a page reads it from a cookie of its own and sends it back in
a header, which a page of another site can neither read nor forge (double submit).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass, field
from urllib.parse import urlsplit

COOKIE = "meterless_session"
CSRF_COOKIE = "meterless_csrf"
CSRF_HEADER = "x-csrf-token"
LIFETIME_S = 8 * 3_600  # a working day; then sign in again
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


@dataclass(frozen=True)
class Sessions:
    """Makes and checks sessions with one key."""

    key: bytes = field(repr=False)

    @classmethod
    def derived(cls, admin_digest: str, cluster_secret: bytes = b"") -> Sessions:
        """The key every replica of one cluster derives alike; none without an admin token
        (then no session is ever valid, as the admin API refuses everyone)."""
        if not admin_digest:
            return cls(b"")
        material = b"meterless dashboard session\x00" + admin_digest.encode()
        return cls(hmac.new(cluster_secret, material, hashlib.sha256).digest())

    def issue(self, now: float) -> str:
        """A new session, valid for LIFETIME_S from `now`."""
        body = f"{int(now + LIFETIME_S)}.{secrets.token_urlsafe(18)}"
        return f"{body}.{self._sign(body)}"

    def valid(self, session: str | None, now: float) -> bool:
        """Whether `session` is one of ours and has not expired."""
        if not self.key or not session or session.count(".") != 2:
            return False
        body, _, signature = session.rpartition(".")
        if not hmac.compare_digest(signature, self._sign(body)):
            return False
        expires = body.partition(".")[0]
        return expires.isdigit() and int(expires) > now

    def csrf(self, session: str) -> str:
        """The CSRF token that goes with `session`."""
        return self._sign("csrf." + session.split(".")[1])

    def csrf_ok(self, session: str, presented: str | None) -> bool:
        """Whether a state-changing request sent the CSRF token of its session."""
        return bool(presented) and hmac.compare_digest(presented or "", self.csrf(session))

    def _sign(self, text: str) -> str:
        return hmac.new(self.key, text.encode(), hashlib.sha256).hexdigest()


def same_origin(origin: str | None, host: str | None) -> bool:
    """Whether a request's Origin (absent: not a cross-site browser request) names its Host."""
    if origin is None:
        return True
    return bool(host) and urlsplit(origin).netloc.lower() == (host or "").lower()
