"""Stop strings over streamed text: what may be emitted now, what must wait, and when to stop.

Text is fed in pieces as the detokenizer releases it. A stop string may straddle pieces, so the
tail that could still become a stop string is held back until the next piece decides it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Scan:
    """The outcome of scanning pending text: emit `emit`, keep `hold`, and whether a stop hit."""

    emit: str
    hold: str
    stopped: bool
    matched: str = ""  # the stop string that hit, "" when none


def scan(pending: str, stops: Sequence[str]) -> Scan:
    """Split pending text at the earliest stop string, or hold back a possible stop prefix."""
    hits = [(i, s) for s in stops if s and (i := pending.find(s)) >= 0]
    if hits:
        at, stop = min(hits)
        return Scan(pending[:at], "", True, stop)
    keep = _partial_stop_length(pending, stops)
    return Scan(pending[: len(pending) - keep], pending[len(pending) - keep :], False)


def _partial_stop_length(text: str, stops: Sequence[str]) -> int:
    """Length of the longest tail of `text` that is a proper prefix of some stop string."""
    best = 0
    for stop in stops:
        for n in range(min(len(stop) - 1, len(text)), best, -1):
            if text.endswith(stop[:n]):
                best = n
                break
    return best


class StopFilter:
    """One stream's stop-string state: feed text in, get emittable text out."""

    def __init__(self, stops: Sequence[str]) -> None:
        self._stops = tuple(s for s in stops if s)
        self._held = ""
        self.stopped = False
        self.matched = ""  # the stop string that hit

    def feed(self, text: str) -> str:
        """Take newly decoded text; return what is safe to emit (nothing once stopped)."""
        if self.stopped:
            return ""
        if not self._stops:
            return text
        result = scan(self._held + text, self._stops)
        self._held, self.stopped, self.matched = result.hold, result.stopped, result.matched
        return result.emit

    def flush(self) -> str:
        """Release the held tail at the end of a stream that did not stop on a string."""
        held, self._held = ("" if self.stopped else self._held), ""
        return held
