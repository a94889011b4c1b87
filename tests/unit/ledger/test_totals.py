"""The running all-time totals agree with what the ledger file says, without reading it."""

from __future__ import annotations

from pathlib import Path

from cluster.ledger import store
from cluster.ledger.energy import NodeSample
from cluster.ledger.reports import Snapshot
from cluster.ledger.totals import Totals
from tests.unit.ledger.test_store import row

SAMPLES = [
    NodeSample(node_id="n1", t0=0.0, t1=10.0, busy_s=2.5, idle_s=7.5, measured_j=120.0),
    NodeSample(node_id="n1", t0=10.0, t1=20.0, busy_s=1.0, idle_s=9.0),
    NodeSample(node_id="n2", t0=0.0, t1=10.0, busy_s=0.0, idle_s=10.0),
]


def from_file(tmp_path: Path) -> Snapshot:
    """The all-time snapshot as the cost report reads it from the file."""
    conn = store.connect(tmp_path / store.FILE_NAME)
    return Snapshot(served=store.served(conn, None), power=store.power(conn, None))


def test_totals_loaded_then_added_to_equal_the_files_figures(tmp_path: Path) -> None:
    conn = store.connect(tmp_path / store.FILE_NAME)
    before = [row(1, at=1.0), row(2, at=2.0, model="other"), row(3, at=3.0, node=None)]
    store.insert_requests(conn, before)
    store.insert_samples(conn, SAMPLES[:1])
    totals = Totals(from_file(tmp_path))
    after = [row(4, at=4.0), row(5, at=5.0, node="n2"), row(6, at=6.0, node=None)]
    store.insert_requests(conn, after)
    store.insert_samples(conn, SAMPLES[1:])
    totals.add_rows(after)
    totals.add_samples(SAMPLES[1:])
    assert totals.snapshot() == from_file(tmp_path)


def test_a_row_no_node_served_counts_for_no_node() -> None:
    totals = Totals(Snapshot())
    totals.add_rows([row(1, at=1.0, node=None)])
    snapshot = totals.snapshot()
    assert (list(snapshot.served), dict(snapshot.power)) == ([], {})
