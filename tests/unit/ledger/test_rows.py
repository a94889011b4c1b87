"""The ledger's row schema (ledger/rows.py): request ids."""

from __future__ import annotations

import time

from cluster.ledger.rows import new_request_id


def test_request_ids_are_unique_and_sort_in_the_order_they_were_made() -> None:
    earlier = [new_request_id() for _ in range(1_000)]
    time.sleep(0.002)
    later = new_request_id()
    assert len(set(earlier)) == 1_000
    assert all(len(i) == 24 and int(i, 16) >= 0 for i in [*earlier, later])
    assert max(earlier) < later
    assert abs(int(later[:11], 16) / 1000 - time.time()) < 5  # its first digits: the time
