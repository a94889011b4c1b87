"""Prefix keys: what routing remembers of a prompt to send its continuation back to the same node.

Pure: chained 64-bit blake2b keys, one per message of a conversation (key i covers messages 0..i)
or per whole block of a plain prompt, so a follow-up turn shares the keys of the turns before it.
PrefixAffinity (gateway/routing.py) maps them to the node whose prompt cache holds that prefix.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence

_MESSAGE_PERSON = b"meterless.msg.v1"  # blake2b personalisation: keeps the two key families apart
_TEXT_PERSON = b"meterless.txt.v1"


def _chain(previous: bytes, data: bytes, person: bytes) -> bytes:
    return hashlib.blake2b(previous + data, digest_size=8, person=person).digest()


def _encode(text: str) -> bytes:
    # JSON may carry lone surrogates; they must hash, not raise.
    return text.encode("utf-8", "surrogatepass")


def prefix_keys_for_messages(messages: Sequence[tuple[str, str]]) -> tuple[int, ...]:
    """Chained 64-bit keys: key i covers the conversation up to and including message i."""
    keys: list[int] = []
    previous = b""
    for role, content in messages:
        role_bytes = _encode(role)
        # Length-prefixing the role keeps ("ab", "c") and ("a", "bc") apart.
        data = len(role_bytes).to_bytes(4, "big") + role_bytes + _encode(content)
        previous = _chain(previous, data, _MESSAGE_PERSON)
        keys.append(int.from_bytes(previous, "big"))
    return tuple(keys)


def prefix_keys_for_text(text: str, block: int = 256) -> tuple[int, ...]:
    """Chained 64-bit keys over whole `block`-character blocks of `text`."""
    if block < 1:
        raise ValueError("block must be at least 1 character")
    keys: list[int] = []
    previous = b""
    for start in range(0, len(text) - block + 1, block):
        previous = _chain(previous, _encode(text[start : start + block]), _TEXT_PERSON)
        keys.append(int.from_bytes(previous, "big"))
    return tuple(keys)


_SESSION_PERSON = b"meterless.ses.v1"
# Headers agent clients send with every request of one session: Claude Code's, then Codex's.
SESSION_HEADERS = ("x-claude-code-session-id", "session-id", "session_id")


def session_id(headers: Mapping[str, str], *fallbacks: object) -> str | None:
    """A request's session: the first session header a client sent, else the first of
    `fallbacks` (body fields such as `prompt_cache_key` or `user`) that is a non-empty string."""
    for name in SESSION_HEADERS:
        if value := headers.get(name):
            return value
    return next((f for f in fallbacks if isinstance(f, str) and f), None)


def with_session(keys: tuple[int, ...], session: str | None) -> tuple[int, ...]:
    """`keys` led by the session's own key: routing matches the longest prefix it knows first,
    and the session's node when no prefix is known (the conversation was edited, a volatile
    line changed the first message), so an agent's turns keep going where its cache is."""
    if not session:
        return keys
    digest = hashlib.blake2b(_encode(session), digest_size=8, person=_SESSION_PERSON).digest()
    return (int.from_bytes(digest, "big"), *keys)
