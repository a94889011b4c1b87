"""Tokens/s of the MLX engine against mlx-lm used directly, side by side in one run.

    .venv/bin/python -m bench.agent [--model PATH] [--max-tokens 128] [--repeats 5] [--no-grpc]

Columns: mlx-lm in-process (`stream_generate` for one stream, `batch_generate` for eight), our
MlxEngine in-process, and a `node-agent` subprocess driven over gRPC. Every cell is the median of
`--repeats` runs of the same greedy prompt and max_tokens, after a warm-up, with the configurations
interleaved so drift hits them all alike (the prompt changes between rounds, so that no column
gains from a prompt cache). Aggregate tokens/s = completion tokens / wall time.
Targets: agent/direct >= 0.9 at 1 stream and >= 0.85 at 8 streams.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import mlx_lm
from mlx_lm.generate import batch_generate, stream_generate

from node_agent.demo_model import ensure_demo_model
from node_agent.engines.base import LoadSpec
from node_agent.engines.mlx import MlxEngine
from node_agent.proto import pb, pb_grpc
from node_agent.types import Finished, GenerateRequest, Sampling

PROMPT = "The office is quiet in the morning. A few machines sit on the desk, and"
STREAMS = (1, 8)
Measure = Callable[[int, str], Awaitable["Run"]]  # (streams, prompt) -> one timed run


@dataclass(frozen=True)
class Run:
    """One timed run: completion tokens over all streams and the wall time they took."""

    tokens: int
    seconds: float

    @property
    def tps(self) -> float:
        """Aggregate tokens per second."""
        return self.tokens / self.seconds


def direct(model: Any, tokenizer: Any, max_tokens: int) -> Measure:
    """mlx-lm used directly: stream_generate for one stream, batch_generate for several."""

    def blocking(streams: int, prompt: str) -> Run:
        ids = tokenizer.encode(prompt)
        start = time.perf_counter()
        if streams == 1:
            tokens = 0
            for r in stream_generate(model, tokenizer, ids, max_tokens=max_tokens):
                tokens = r.generation_tokens
        else:
            result = batch_generate(model, tokenizer, [ids] * streams, max_tokens=max_tokens)
            tokens = result.stats.generation_tokens
        return Run(tokens, time.perf_counter() - start)

    async def measure(streams: int, prompt: str) -> Run:
        # On a thread, like the engine's worker, so the loop (and the gRPC channel) stay served.
        return await asyncio.to_thread(blocking, streams, prompt)

    return measure


def in_process(engine: MlxEngine, model: str, max_tokens: int) -> Measure:
    """Our engine in this process, `streams` concurrent generations."""
    sampling = Sampling(max_tokens=max_tokens, temperature=0.0)

    async def one(i: int, prompt: str) -> int:
        req = GenerateRequest(request_id=str(i), model=model, text=prompt, sampling=sampling)
        async for event in engine.generate(req):
            if isinstance(event, Finished):
                return event.usage.completion_tokens
        raise RuntimeError("the stream ended without Finished")

    return _concurrently(one)


def over_grpc(stub: Any, model: str, max_tokens: int) -> Measure:
    """The agent subprocess over gRPC, `streams` concurrent Generate calls."""
    sampling = pb.Sampling(max_tokens=max_tokens, temperature=0.0)

    async def one(i: int, prompt: str) -> int:
        req = pb.GenerateRequest(request_id=str(i), model=model, text=prompt, sampling=sampling)
        async for response in stub.Generate(req):
            if response.HasField("finished"):
                return int(response.finished.usage.completion_tokens)
        raise RuntimeError("the stream ended without Finished")

    return _concurrently(one)


def _concurrently(one: Callable[[int, str], Awaitable[int]]) -> Measure:
    """Time `streams` copies of `one` run together."""

    async def measure(streams: int, prompt: str) -> Run:
        start = time.perf_counter()
        counts = await asyncio.gather(*(one(i, prompt) for i in range(streams)))
        return Run(sum(counts), time.perf_counter() - start)

    return measure


@contextmanager
def agent_process(model: str, data_dir: Path) -> Iterator[str]:
    """A `node-agent` on a free loopback port serving `model`; yields its address."""
    port_file = data_dir / "port"
    cmd = [sys.executable, "-m", "node_agent", "--model", model, "--host", "127.0.0.1"]
    cmd += ["--port", "0", "--port-file", str(port_file), "--no-mdns"]
    cmd += ["--data-dir", str(data_dir), "--log-level", "warning"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline() if proc.stdout else ""
        if "listening" not in line:
            raise RuntimeError(f"node-agent did not start (exit {proc.poll()}): {line!r}")
        yield f"127.0.0.1:{port_file.read_text().strip()}"
    finally:
        proc.terminate()
        proc.wait(timeout=30)


async def bench(measures: dict[str, Measure], repeats: int) -> dict[tuple[str, int], float]:
    """Median tokens/s per (column, streams), warm-up first, configurations interleaved."""
    runs: dict[tuple[str, int], list[float]] = {}
    for repeat in range(repeats + 1):
        for streams in STREAMS:
            # Every column gets the same prompt, but a new one each round: the engine's prompt
            # cache would otherwise skip a prefill that mlx-lm direct has to do.
            prompt = f"{repeat}/{streams}. {PROMPT}"
            for name, measure in measures.items():
                run = await measure(streams, prompt)
                if repeat:  # the first round is the warm-up
                    runs.setdefault((name, streams), []).append(run.tps)
    return {key: statistics.median(values) for key, values in runs.items()}


def report(results: dict[tuple[str, int], float], columns: list[str]) -> None:
    """Print the table of tokens/s and the ratios against mlx-lm direct."""
    print(f"{'streams':>8}" + "".join(f"{c:>14}" for c in columns) + "   ratio vs direct")
    for streams in STREAMS:
        base = results[("direct", streams)]
        cells = "".join(f"{results[(c, streams)]:>14.1f}" for c in columns)
        ratios = "  ".join(f"{c}={results[(c, streams)] / base:.3f}" for c in columns[1:])
        print(f"{streams:>8}{cells}   {ratios}")
    if "grpc" in columns:
        one, eight = (results[("grpc", s)] / results[("direct", s)] for s in STREAMS)
        print(f"agent/direct: 1 stream {one:.3f} (target >= 0.9), 8 streams {eight:.3f} (>= 0.85)")


async def main(args: argparse.Namespace) -> None:
    """Load the model in-process, start the agent, measure, print."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(args.model) if args.model else ensure_demo_model(Path(tmp))
        model, tokenizer = mlx_lm.load(str(path))[:2]
        engine = MlxEngine()
        await engine.load(LoadSpec(name="bench", source=str(path), path=path))
        measures = {
            "direct": direct(model, tokenizer, args.max_tokens),
            "engine": in_process(engine, "bench", args.max_tokens),
        }
        try:
            if args.no_grpc:
                report(await bench(measures, args.repeats), list(measures))
                return
            agent_dir = Path(tmp) / "agent"
            agent_dir.mkdir()
            with agent_process(args.model or "demo", agent_dir) as address:
                async with grpc.aio.insecure_channel(address) as channel:
                    stub = pb_grpc.AgentStub(channel)  # type: ignore[no-untyped-call]
                    listed = await stub.ListModels(pb.ListModelsRequest())
                    measures["grpc"] = over_grpc(stub, listed.models[0].name, args.max_tokens)
                    report(await bench(measures, args.repeats), list(measures))
        finally:
            await engine.close()


def parse_args() -> argparse.Namespace:
    """The benchmark's flags."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="a local mlx-lm model directory (default: the demo model)")
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--no-grpc", action="store_true", help="skip the agent subprocess")
    return parser.parse_args()


if __name__ == "__main__":
    asyncio.run(main(parse_args()))
