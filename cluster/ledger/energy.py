"""A node's busy time and energy, integrated from its status stream into ledger rows. Pure.

The agent reports `busy_seconds` (node-wide, monotonic: time with at least one generation
running) and, where its hardware reports it, `power_watts`. Between two status messages the
node was busy for the growth of `busy_seconds` and idle for the rest; its energy is the mean of
the two power readings times the interval when both were measured, else unknown (the ledger then
prices those seconds at the node's configured watts). Intervals are summed into chunks of about
`chunk_s` seconds; a chunk is either wholly measured or wholly not, so it is cut early when that
changes, and a silence longer than `max_gap_s` is left out rather than guessed.
"""

from __future__ import annotations

from dataclasses import dataclass, replace


@dataclass(frozen=True, kw_only=True)
class NodeSample:
    """One node's time and energy over [t0, t1] (unix seconds): one row of the ledger."""

    node_id: str
    t0: float
    t1: float
    busy_s: float = 0.0
    idle_s: float = 0.0
    measured_j: float | None = None  # None: power was not measured in this chunk

    @property
    def busy_ratio(self) -> float:
        """Busy seconds over observed seconds (0 when none were observed)."""
        seen = self.busy_s + self.idle_s
        return self.busy_s / seen if seen > 0 else 0.0

    @property
    def watts(self) -> float | None:
        """Mean measured power over the chunk, if it was measured."""
        seen = self.busy_s + self.idle_s
        return self.measured_j / seen if self.measured_j is not None and seen > 0 else None


@dataclass(frozen=True)
class _Reading:
    at: float
    busy: float
    watts: float | None


class EnergyMeter:
    """Integrates one node's status samples into NodeSample chunks."""

    def __init__(self, node_id: str, *, chunk_s: float = 10.0, max_gap_s: float = 5.0) -> None:
        self.node_id = node_id
        self.chunk_s = chunk_s
        self.max_gap_s = max_gap_s
        self._last: _Reading | None = None
        self._chunk: NodeSample | None = None
        self.latest: NodeSample | None = None  # the most recent full chunk, for live gauges

    def add(self, at: float, busy_seconds: float, watts: float | None) -> NodeSample | None:
        """Take one status sample; returns a finished chunk when one is complete."""
        last, self._last = self._last, _Reading(at, busy_seconds, watts)
        if last is None or at <= last.at:
            return None
        dt = at - last.at
        if dt > self.max_gap_s:
            return self.close()
        busy = min(max(busy_seconds - last.busy, 0.0), dt)  # a restarted agent counts from 0
        measured = None if watts is None or last.watts is None else (watts + last.watts) / 2 * dt
        part = NodeSample(
            node_id=self.node_id,
            t0=last.at,
            t1=at,
            busy_s=busy,
            idle_s=dt - busy,
            measured_j=measured,
        )
        done = None
        if self._chunk is not None and (self._chunk.measured_j is None) != (measured is None):
            done = self.close()
        self._chunk = part if self._chunk is None else _joined(self._chunk, part)
        if done is None and self._chunk.t1 - self._chunk.t0 >= self.chunk_s:
            done = self.close()
        return done

    def close(self) -> NodeSample | None:
        """End the current chunk (the stream ended); returns it, if it has any time."""
        chunk, self._chunk = self._chunk, None
        if chunk is not None:
            self.latest = chunk
        return chunk

    @property
    def last_at(self) -> float | None:
        """When the last sample arrived."""
        return self._last.at if self._last else None

    def recent(self) -> NodeSample | None:
        """The current chunk once it spans 2 s, else the last finished one."""
        if self._chunk is not None and self._chunk.t1 - self._chunk.t0 >= 2.0:
            return self._chunk
        return self.latest


def _joined(a: NodeSample, b: NodeSample) -> NodeSample:
    measured = None if a.measured_j is None or b.measured_j is None else a.measured_j + b.measured_j
    return replace(
        a, t1=b.t1, busy_s=a.busy_s + b.busy_s, idle_s=a.idle_s + b.idle_s, measured_j=measured
    )
