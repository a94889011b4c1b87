"""The data dir and its files are owner-only: the ledger names every key and model used."""

from __future__ import annotations

import asyncio
import stat
from pathlib import Path

from cluster.deployments.store import FILE_NAME, DeployStore
from cluster.ledger import store
from cluster.paths import private_dir, private_file


def mode(path: Path) -> int:
    """The permission bits of `path`."""
    return stat.S_IMODE(path.stat().st_mode)


def test_a_data_dir_is_made_or_made_again_owner_only(tmp_path: Path) -> None:
    assert mode(private_dir(tmp_path / "a" / "data")) == 0o700
    loose = tmp_path / "loose"
    loose.mkdir(mode=0o755)
    loose.chmod(0o755)
    assert mode(private_dir(loose)) == 0o700


def test_a_file_is_created_0600_and_a_loose_one_is_tightened(tmp_path: Path) -> None:
    private_file(tmp_path / "new")
    assert mode(tmp_path / "new") == 0o600
    loose = tmp_path / "loose"
    loose.write_text("kept")
    loose.chmod(0o644)
    private_file(loose)
    assert (mode(loose), loose.read_text()) == (0o600, "kept")
    private_file(":memory:")  # nothing to make


def test_the_ledger_and_its_wal_are_owner_only(tmp_path: Path) -> None:
    conn = store.connect(tmp_path / store.FILE_NAME)
    store.insert_samples(conn, [])
    files = sorted(tmp_path.iterdir())
    assert len(files) == 3  # the file, its -wal and -shm
    assert {mode(f) for f in files} == {0o600}


def test_the_deployments_file_is_owner_only(tmp_path: Path) -> None:
    deployments = DeployStore(tmp_path / FILE_NAME)
    asyncio.run(deployments.open())
    asyncio.run(deployments.close())
    assert {mode(f) for f in tmp_path.iterdir()} == {0o600}
