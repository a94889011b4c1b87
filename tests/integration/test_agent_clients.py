"""The real agent CLIs against a real cluster: Claude Code speaks Anthropic Messages, Codex the
Responses API, each one turn through `cluster up --demo`, installed from npm at pinned versions.

Both prompts are trimmed (a short system prompt, few tools): the CLIs' own are 12k-20k tokens,
which the demo model on a small CPU does not prefill within the gateway's first-token timeout.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.harness import ClusterProcess, share_models, wait_for

pytestmark = pytest.mark.timeout(600)

CLAUDE_CODE_VERSION = "2.1.332"
CODEX_VERSION = "0.171.0"
CACHE = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "meterless-test-clients"
TERSE = "You are a terse assistant."
TURN_TIMEOUT_S = 180


@pytest.fixture(scope="session")
def client_bin() -> Path:
    """node_modules/.bin holding `claude` and `codex`, installed once per pair of versions."""
    home = CACHE / f"claude-code-{CLAUDE_CODE_VERSION}_codex-{CODEX_VERSION}"
    if not (home / "node_modules/.bin/codex").exists():
        npm = shutil.which("npm")
        if npm is None:
            reason = "npm is not installed (the agent CLIs come from the npm registry)"
            if os.environ.get("CI"):
                pytest.fail(reason)
            pytest.skip(reason)
        packages = (
            f"@anthropic-ai/claude-code@{CLAUDE_CODE_VERSION}",
            f"@openai/codex@{CODEX_VERSION}",
        )
        partial = home.with_name(home.name + ".partial")  # renamed only once complete
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir(parents=True)
        subprocess.run(
            [npm, "install", "--prefix", str(partial), "--no-audit", "--no-fund", *packages],
            check=True,
            timeout=600,
        )
        partial.rename(home)
    return home / "node_modules/.bin"


@pytest.fixture(scope="module")
def cluster(
    tmp_path_factory: pytest.TempPathFactory, demo_model_dir: Path
) -> Iterator[ClusterProcess]:
    """`cluster up --demo`: one local agent serving the (already generated) demo model."""
    root = tmp_path_factory.mktemp("agent-clients")
    head = ClusterProcess(share_models(root / "head", demo_model_dir.parent), args=("--demo",))
    try:
        yield head.start()
    finally:
        head.stop()


def client_env(home: Path, **extra: str) -> dict[str, str]:
    """A bare environment with a throwaway HOME: none of the developer's keys or config."""
    home.mkdir(exist_ok=True)
    return {"PATH": os.environ["PATH"], "HOME": str(home), "LANG": "C.UTF-8", **extra}


def ledger(cluster: ClusterProcess) -> list[tuple[str, str]]:
    """(endpoint, outcome) of every request the ledger recorded, in order."""
    conn = sqlite3.connect(cluster.data_dir / "ledger.sqlite3")
    try:
        return list(conn.execute("SELECT endpoint, outcome FROM requests ORDER BY at"))
    finally:
        conn.close()


def run(cmd: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    """One CLI turn, with its output kept for the assertion message."""
    return subprocess.run(
        cmd,
        env=env,
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=TURN_TIMEOUT_S,
    )


def test_claude_code_completes_a_turn(
    cluster: ClusterProcess, client_bin: Path, tmp_path: Path
) -> None:
    models = ("MODEL", "DEFAULT_OPUS_MODEL", "DEFAULT_SONNET_MODEL", "DEFAULT_HAIKU_MODEL")
    env = client_env(
        tmp_path / "home",
        ANTHROPIC_BASE_URL=cluster.url,
        ANTHROPIC_API_KEY="sk-meterless-test",
        **{f"ANTHROPIC_{tier}": "demo" for tier in models},
        ANTHROPIC_SMALL_FAST_MODEL="demo",  # what versions before the tier variables read
        CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC="1",
        CLAUDE_CODE_MAX_OUTPUT_TOKENS="256",
    )
    # --bare: no hooks, plugins, CLAUDE.md discovery or keychain; one tool keeps `tools` sent.
    cmd = [str(client_bin / "claude"), "--bare", "-p", "Say hello.", "--max-turns", "1"]
    cmd += ["--tools", "Read", "--system-prompt", TERSE, "--output-format", "json"]
    out = run(cmd, env, tmp_path)
    assert out.returncode == 0, f"{out.stdout}\n{out.stderr}"
    result = json.loads(out.stdout)
    assert result["type"] == "result" and result["is_error"] is False, result
    assert result["result"].strip()
    wait_for(lambda: ("messages", "ok") in ledger(cluster), 30, "a served /v1/messages row")


def test_codex_completes_a_turn(cluster: ClusterProcess, client_bin: Path, tmp_path: Path) -> None:
    codex_home = tmp_path / "codex"
    codex_home.mkdir()
    (codex_home / "instructions.md").write_text(TERSE + "\n")
    # Codex's defaults otherwise, its function and hosted tools included; goals, skills and the
    # multi-agent namespace (11k characters of tool schemas) only lengthen the prompt this small
    # CPU has to prefill: with them the turn is ~5,400 tokens, which a loaded 2-core machine
    # prefills slower than the gateway's first-token deadline allows. Namespace tools are
    # covered by the Responses API's own tests.
    (codex_home / "config.toml").write_text(
        f"""
model = "demo"
model_provider = "meterless"
model_instructions_file = "{codex_home / "instructions.md"}"

[features]
goals = false
multi_agent = false

[skills]
include_instructions = false

[model_providers.meterless]
name = "meterless"
base_url = "{cluster.url}/v1"
wire_api = "responses"
env_key = "METERLESS_API_KEY"
request_max_retries = 0
stream_max_retries = 0
"""
    )
    env = client_env(
        tmp_path / "home", CODEX_HOME=str(codex_home), METERLESS_API_KEY="sk-meterless-test"
    )
    last = tmp_path / "last-message.txt"
    cmd = [str(client_bin / "codex"), "exec", "--skip-git-repo-check", "--sandbox", "read-only"]
    cmd += ["--ephemeral", "--output-last-message", str(last), "Say hello."]
    out = run(cmd, env, tmp_path)
    assert out.returncode == 0, f"{out.stdout}\n{out.stderr}"
    assert last.read_text().strip()
    wait_for(lambda: ("responses", "ok") in ledger(cluster), 30, "a served /v1/responses row")
