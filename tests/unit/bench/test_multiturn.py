"""bench/multiturn.py: its documents and its same-node share, on made-up turns."""

from __future__ import annotations

import pytest

from bench.common import Timing
from bench.multiturn import Turn, _same_node, document


def _turn(conversation: int, turn: int, node: str) -> Turn:
    return Turn(conversation, turn, Timing(started=0.0, first=0.1, last=0.2, tokens=4, node=node))


def test_a_document_reaches_its_length_and_differs_by_seed() -> None:
    def words(text: str) -> int:
        return len(text.split())

    a, b = document("a", 200, words), document("b", 200, words)
    assert 200 <= words(a) < 230  # one line past the length at most
    assert a != b
    assert document("a", 200, words) == a  # the same seed, the same notes


@pytest.mark.parametrize(
    ("nodes", "share"),
    [
        ({1: "x", 2: "x", 3: "x"}, 1.0),
        ({1: "x", 2: "y", 3: "y"}, 0.5),
        ({1: "x", 2: "y", 3: "x"}, 0.0),
    ],
)
def test_same_node_counts_later_turns_that_went_back(nodes: dict[int, str], share: float) -> None:
    turns = [_turn(0, k, node) for k, node in nodes.items()]
    assert _same_node(turns) == pytest.approx(share)


def test_same_node_keeps_conversations_apart() -> None:
    turns = [_turn(0, 1, "x"), _turn(1, 1, "y"), _turn(0, 2, "x"), _turn(1, 2, "y")]
    assert _same_node(turns) == 1.0
    assert _same_node([_turn(0, 1, "x")]) == 0.0  # no later turns
