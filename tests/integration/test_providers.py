"""`cluster providers` as a user runs it: the real command, the real config dir on disk."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

KEY = "sk-live-integration-7f3a9c"


def _cluster(cfg: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cluster.cli", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "METERLESS_CONFIG_DIR": str(cfg), **env},
    )


def test_providers_keep_the_key_owner_only_and_out_of_sight(tmp_path: Path) -> None:
    cfg = tmp_path / "config"
    add = ["providers", "add", "cloud", "--kind", "openai", "--base-url", "http://127.0.0.1:9/v1"]
    made = _cluster(cfg, *add, "--key-env", "CLOUD_KEY", "--price", "m=2,8", CLOUD_KEY=KEY)
    assert made.returncode == 0, made.stderr
    listed = _cluster(cfg, "providers", "--json")
    (p,) = json.loads(listed.stdout)["providers"]
    assert p["key_set"] is True and p["base_url"] == "http://127.0.0.1:9/v1"
    assert stat.S_IMODE(cfg.stat().st_mode) == 0o700
    key_file = cfg / "provider-keys" / "cloud"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600 and key_file.read_text() == KEY + "\n"
    on_disk = [f.read_text() for f in cfg.rglob("*") if f.is_file() and f != key_file]
    assert all(KEY not in text for text in on_disk)
    bad = _cluster(cfg, *add, "--key-file", str(tmp_path / "missing"))
    assert bad.returncode == 1 and bad.stderr.count("\n") == 1 and "no key file" in bad.stderr
    gone = _cluster(cfg, "providers", "rm", "cloud")
    assert gone.returncode == 0 and not key_file.exists()
    every = made.stdout + made.stderr + listed.stdout + listed.stderr + gone.stdout + gone.stderr
    assert KEY not in every
