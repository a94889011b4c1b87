"""A real `node-agent` subprocess for integration tests, on a port the OS picks."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

LISTENING = re.compile(
    r"^meterless node-agent (?P<id>\w+) listening on (?P<host>\S+):(?P<port>\d+) "
    r"\(models: (?P<models>.*)\)$",
    re.MULTILINE,
)


def data_dir_sharing_models(data_dir: Path, demo_model_dir: Path) -> Path:
    """A fresh data dir whose `models/` is the session's generated demo model's directory."""
    data_dir.mkdir(parents=True, exist_ok=True)
    (data_dir / "models").symlink_to(demo_model_dir.parent, target_is_directory=True)
    return data_dir


@dataclass
class RunningAgent:
    """`python -m node_agent --port 0 ...`, its stdout and stderr in files in its data dir."""

    data_dir: Path
    args: Sequence[str] = ()
    env: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen[bytes] | None = None
    port: int = 0
    node_id: str = ""
    models: str = ""
    runs: int = 0

    @property
    def address(self) -> str:
        """host:port of its gRPC server."""
        return f"127.0.0.1:{self.port}"

    @property
    def stdout(self) -> Path:
        """This run's stdout file."""
        return self.data_dir / f"agent-{self.runs}.out"

    @property
    def stderr(self) -> Path:
        """This run's stderr file."""
        return self.data_dir / f"agent-{self.runs}.err"

    def start(self, timeout: float = 120.0) -> RunningAgent:
        """Start it and wait for its listening line; fail with its log if it exits first."""
        self.runs += 1
        cmd = [
            sys.executable,
            "-m",
            "node_agent",
            "--host",
            "127.0.0.1",
            "--port",
            "0",
            "--data-dir",
            str(self.data_dir),
            *self.args,
        ]
        env = {**os.environ, **self.env}
        with self.stdout.open("wb") as out, self.stderr.open("wb") as err:
            self.proc = subprocess.Popen(cmd, stdout=out, stderr=err, env=env)
        match = self._wait_for_line(timeout)
        self.port, self.node_id, self.models = int(match["port"]), match["id"], match["models"]
        return self

    def _wait_for_line(self, timeout: float) -> re.Match[str]:
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if match := LISTENING.search(self.stdout.read_text()):
                return match
            if self.proc.poll() is not None:
                raise AssertionError(f"agent exited with {self.proc.returncode}:\n{self.log()}")
            time.sleep(0.05)
        self.kill()
        raise AssertionError(f"agent did not listen within {timeout:.0f}s:\n{self.log()}")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int:
        """SIGTERM (or `sig`), then wait; the exit code."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.kill()
                raise AssertionError(f"agent ignored SIGTERM:\n{self.log()}") from None
        return self.proc.returncode

    def kill(self) -> None:
        """SIGKILL, for cleanup after a failure."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def log(self) -> str:
        """This run's stdout and the end of its stderr."""
        err = self.stderr.read_text(errors="replace").splitlines()[-40:]
        return self.stdout.read_text(errors="replace") + "\n".join(err)
