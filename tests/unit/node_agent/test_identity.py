"""The node id: generated once, stable across restarts, repaired when the file is damaged."""

from __future__ import annotations

from pathlib import Path

from node_agent.identity import ID_LENGTH, node_id


def test_generated_once_then_stable(tmp_path: Path) -> None:
    first = node_id(tmp_path / "data")
    assert len(first) == ID_LENGTH and int(first, 16) >= 0
    assert node_id(tmp_path / "data") == first
    assert (tmp_path / "data" / "node_id").read_text().strip() == first


def test_distinct_data_dirs_get_distinct_ids(tmp_path: Path) -> None:
    assert node_id(tmp_path / "a") != node_id(tmp_path / "b")


def test_a_malformed_file_is_replaced(tmp_path: Path) -> None:
    (tmp_path / "node_id").write_text("not an id!\n")
    fresh = node_id(tmp_path)
    assert fresh != "not an id!" and node_id(tmp_path) == fresh


def test_an_existing_id_is_kept_as_written(tmp_path: Path) -> None:
    (tmp_path / "node_id").write_text("0123456789abcdef\n")
    assert node_id(tmp_path) == "0123456789abcdef"
