from __future__ import annotations

import stat
from pathlib import Path

import pytest

from cluster.access.ray_auth import FILE_NAME, RayAuthRefused, ensure_token, ray_env


def test_the_token_is_made_once_owner_only(tmp_path: Path) -> None:
    path = ensure_token(tmp_path / "config")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert len(path.read_text()) == 64 and ensure_token(tmp_path / "config") == path
    assert path.read_text() == ensure_token(tmp_path / "config").read_text()


def test_a_token_left_readable_by_others_is_made_owner_only(tmp_path: Path) -> None:
    path = ensure_token(tmp_path)
    path.chmod(0o644)
    ensure_token(tmp_path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


@pytest.mark.parametrize("mode", ["", "token", "TOKEN"])
def test_token_auth_is_pinned_on_with_the_config_dirs_token(tmp_path: Path, mode: str) -> None:
    env = ray_env({"RAY_AUTH_MODE": mode} if mode else {}, tmp_path, insecure=False)
    assert env == {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(tmp_path / FILE_NAME)}


@pytest.mark.parametrize("given", ["RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH"])
def test_a_token_the_operator_gave_is_kept(tmp_path: Path, given: str) -> None:
    assert ray_env({given: "x"}, tmp_path, insecure=False) == {"RAY_AUTH_MODE": "token"}
    assert not (tmp_path / FILE_NAME).exists()


def test_auth_turned_off_is_refused_unless_insecure(tmp_path: Path) -> None:
    with pytest.raises(RayAuthRefused, match="RAY_AUTH_MODE=disabled turns off"):
        ray_env({"RAY_AUTH_MODE": "disabled"}, tmp_path, insecure=False)
    assert ray_env({"RAY_AUTH_MODE": "disabled"}, tmp_path, insecure=True) == {}
