"""Measured decode throughput of one model on one node, from its monotonic status counters.

Pure: the caller passes each sample's time; nothing here reads a clock.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

# What a node is assumed to do before it has been measured: low enough that an unmeasured node
# does not draw a flood it cannot serve, high enough that it still gets traffic and gets measured.
INITIAL_TPS = 20.0


@dataclass(frozen=True, slots=True)
class _Sample:
    t: float
    tokens: int
    busy: float


class ThroughputWindow:
    """Rolling-window tokens per busy second for one series of monotonic counters.

    The rate is generated tokens divided by busy seconds (seconds with at least one request
    running), so an idle node keeps its rate instead of decaying towards zero. With continuous
    batching it is the aggregate rate at the concurrency the node actually saw.
    """

    def __init__(
        self, window_s: float = 30.0, *, min_busy_s: float = 1.0, min_tokens: int = 32
    ) -> None:
        if window_s <= 0:
            raise ValueError("window_s must be positive")
        self.window_s = window_s
        self.min_busy_s = min_busy_s
        self.min_tokens = min_tokens
        self._samples: deque[_Sample] = deque()
        self._rate: float | None = None

    def add(self, t: float, generated_tokens: int, busy_seconds: float) -> None:
        """Take one status sample; a counter that went backwards starts a new series."""
        if self._samples:
            last = self._samples[-1]
            if t <= last.t:
                return  # late or duplicate sample: the newer one already counted
            if generated_tokens < last.tokens or busy_seconds < last.busy:
                # Agent restarted or model reloaded. The old rate stays until the new series
                # has enough work of its own: same hardware, and a guess would starve the node.
                self._samples.clear()
        self._samples.append(_Sample(t, generated_tokens, busy_seconds))
        self._trim(t)
        rate = self._window_rate()
        if rate is not None:
            self._rate = rate

    def tokens_per_second(self) -> float | None:
        """Tokens per busy second over the latest window that held enough work; None before."""
        return self._rate

    def busy_seconds(self) -> float:
        """Busy seconds inside the current window (how much the rate was exercised lately)."""
        if len(self._samples) < 2:
            return 0.0
        return self._samples[-1].busy - self._samples[0].busy

    def _trim(self, now: float) -> None:
        # Keep one sample at or before the window's start as the baseline for the deltas.
        start = now - self.window_s
        while len(self._samples) >= 2 and self._samples[1].t <= start:
            self._samples.popleft()

    def _window_rate(self) -> float | None:
        if len(self._samples) < 2:
            return None
        first, last = self._samples[0], self._samples[-1]
        busy = last.busy - first.busy
        tokens = last.tokens - first.tokens
        if busy < self.min_busy_s or tokens < self.min_tokens:
            return None
        return tokens / busy
