"""`python -m node_agent.demo`: one node agent on the `demo` model, one streamed chat, then stop.

It starts `node-agent --model demo` in a subprocess on a free loopback port with mDNS off (the
model is generated on first use, offline), streams a chat completion from it over gRPC to the
terminal, and stops the agent with SIGTERM. The agent's log goes to a file, shown on failure.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import grpc
import grpc.aio

from node_agent.proto import pb, pb_grpc

START_TIMEOUT_SECONDS = 300.0  # the first run generates the demo model
QUESTION = "What does it cost to own a computer?"


class DemoError(Exception):
    """The demo could not run; the message says why."""


def main(argv: Sequence[str] | None = None) -> int:
    """Run the demo; 0 when the chat streamed and the agent stopped cleanly."""
    args = _parser().parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="meterless-demo-") as scratch:
        agent = _DemoAgent(Path(scratch), args.data_dir)
        try:
            port = agent.start()
            asyncio.run(chat(f"127.0.0.1:{port}", args.question, args.max_tokens))
        except DemoError as exc:
            print(f"\ndemo failed: {exc}\n--- agent log ---\n{agent.log_tail()}", file=sys.stderr)
            return 1
        except KeyboardInterrupt:
            return 130
        finally:
            code = agent.stop()
    print(f"agent stopped (exit code {code})")
    return 0 if code == 0 else 1


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m node_agent.demo", description=__doc__)
    parser.add_argument("--question", default=QUESTION, help="what to ask the demo model")
    parser.add_argument("--max-tokens", type=int, default=64, help="tokens to generate (64)")
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        help="the agent's data dir (default: the agent's own default)",
    )
    return parser


async def chat(address: str, question: str, max_tokens: int) -> None:
    """Stream one chat completion from the agent at `address` to stdout."""
    messages = [
        pb.ChatMessage(role="system", content="You are a helpful assistant."),
        pb.ChatMessage(role="user", content=question),
    ]
    request = pb.GenerateRequest(
        model="demo",
        chat=pb.Chat(messages=messages),
        sampling=pb.Sampling(max_tokens=max_tokens, temperature=0.7),
    )
    print(f"user: {question}\nassistant: ", end="", flush=True)
    async with grpc.aio.insecure_channel(address) as channel:
        try:
            stub = pb_grpc.AgentStub(channel)  # type: ignore[no-untyped-call]
            async for response in stub.Generate(request, timeout=120):
                if response.HasField("delta"):
                    print(response.delta.text, end="", flush=True)
                else:
                    _summary(response.finished)
        except grpc.aio.AioRpcError as exc:
            raise DemoError(f"{exc.code().name}: {exc.details()}") from None


def _summary(finished: pb.Finished) -> None:
    u = finished.usage
    print(
        f"\n\n[{finished.finish_reason}: {u.prompt_tokens} prompt tokens, "
        f"{u.completion_tokens} generated, first token after {u.ttft_seconds * 1000:.0f} ms, "
        f"{u.decode_tokens_per_second:.1f} tokens/s]"
    )


class _DemoAgent:
    """The agent subprocess: started on a free port, stopped with SIGTERM."""

    def __init__(self, scratch: Path, data_dir: Path | None) -> None:
        self._port_file = scratch / "port"
        self._log = scratch / "agent.log"
        self._data_dir = data_dir
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self) -> int:
        """Start the agent and wait until it listens; its port."""
        cmd = [
            sys.executable,
            "-m",
            "node_agent",
            "--model",
            "demo",
            "--host",
            "127.0.0.1",
            "--port",
            "0",
            "--port-file",
            str(self._port_file),
            "--no-mdns",
        ]
        if self._data_dir is not None:
            cmd += ["--data-dir", str(self._data_dir)]
        print("starting a node agent on the demo model (the first run generates it)...")
        # Its own loopback agent, dialled in plaintext: a join token in the environment would
        # make it demand TLS from this chat, so it is not passed on.
        env = {k: v for k, v in os.environ.items() if k != "METERLESS_JOIN_TOKEN"}
        with self._log.open("wb") as log:
            self._proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
        return self._wait_for_port()

    def _wait_for_port(self) -> int:
        assert self._proc is not None
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise DemoError(f"the agent exited with code {self._proc.returncode}")
            log = self._log.read_text(errors="replace")
            if "listening on" in log:
                if "(models: demo)" not in log:
                    raise DemoError("the agent started without the demo model")
                return int(self._port_file.read_text())
            time.sleep(0.1)
        raise DemoError(f"the agent did not serve the demo model in {START_TIMEOUT_SECONDS:.0f}s")

    def stop(self) -> int | None:
        """SIGTERM, then wait; the exit code (None when it never started)."""
        if self._proc is None:
            return None
        if self._proc.poll() is None:
            self._proc.send_signal(signal.SIGTERM)
            try:
                self._proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        return self._proc.returncode

    def log_tail(self, lines: int = 30) -> str:
        """The end of the agent's log."""
        try:
            return "\n".join(self._log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


if __name__ == "__main__":
    sys.exit(main())
