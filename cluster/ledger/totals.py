"""The ledger's all-time figures in memory: read once when the ledger opens, then added to as
rows and samples are committed, so that /metrics (scraped every few seconds) never scans the
whole ledger, which only grows. `cluster cost` still reads the file: it is exact to the row.

Pure: the ledger service feeds it what it committed, on its ledger thread.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from fractions import Fraction

from cluster.ledger.cost import Power, Tokens
from cluster.ledger.energy import NodeSample
from cluster.ledger.reports import Snapshot
from cluster.ledger.rows import NODE_ID, Values
from cluster.ledger.store import Served

_MODEL, _PROMPT, _CACHED, _COMPLETION = 3, 7, 8, 9  # where these are among a row's values


class Totals:
    """Tokens per (node, model) and power per node, since the ledger began."""

    def __init__(self, ever: Snapshot) -> None:
        self._served = {(s.node_id, s.model): s for s in ever.served}
        self._power = dict(ever.power)

    def add_rows(self, rows: Iterable[Values]) -> None:
        """Count committed request rows (those no node served count for no node)."""
        for row in rows:
            node_id, model = row[NODE_ID], row[_MODEL]
            if node_id is None:
                continue
            tokens = Tokens(
                prompt=row[_PROMPT], cached_prompt=row[_CACHED], completion=row[_COMPLETION]
            )
            old = self._served.get((node_id, model))
            self._served[(node_id, model)] = Served(
                node_id=node_id,
                model=model,
                requests=(old.requests if old else 0) + 1,
                tokens=(old.tokens + tokens) if old else tokens,
            )

    def add_samples(self, samples: Iterable[NodeSample]) -> None:
        """Add committed node samples to their nodes' time and energy."""
        for s in samples:
            busy, idle = Fraction(s.busy_s), Fraction(s.idle_s)
            measured = s.measured_j is not None
            add = Power(
                busy_s=busy,
                idle_s=idle,
                measured_s=busy + idle if measured else Fraction(0),
                measured_j=Fraction(s.measured_j or 0.0),
                unmeasured_busy_s=Fraction(0) if measured else busy,
                unmeasured_idle_s=Fraction(0) if measured else idle,
            )
            self._power[s.node_id] = _sum(self._power.get(s.node_id, Power()), add)

    def snapshot(self) -> Snapshot:
        """The figures now, as the cost report reads a window's."""
        served = [self._served[k] for k in sorted(self._served)]
        return Snapshot(served=served, power=dict(self._power))


def _sum(a: Power, b: Power) -> Power:
    return Power(
        **{f.name: getattr(a, f.name) + getattr(b, f.name) for f in dataclasses.fields(Power)}
    )
