"""Tokens/s with a JSON-schema constraint against the same requests unconstrained, per engine.

    .venv/bin/python -m bench.constrained [--engines mlx,vllm] [--max-tokens 64] [--repeats 5]

Each engine runs in this process on the `demo` model. A round sends the same prompts at 1 and
at 8 concurrent streams, once free and once held to SCHEMA by the grammar (llguidance on both
engines), interleaved so that drift hits both alike; every cell is the median of `--repeats`
rounds after a warm-up. Aggregate tokens/s = completion tokens / wall time; constrained
requests may end early (the document closes), so their counts are printed too, and every
constrained output is checked against the schema.
Goal: constrained >= 0.9x unconstrained at 8 streams on MLX; on vLLM its own overhead is the
reference (there is no unconstrained engine to compare with but itself).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import jsonschema

from node_agent.agent import make_engine
from node_agent.demo_model import ensure_demo_model
from node_agent.engines.base import Engine, LoadSpec
from node_agent.engines.common import available_memory_bytes
from node_agent.types import (
    ChatMessage,
    Constraint,
    ConstraintKind,
    Delta,
    Finished,
    GenerateRequest,
    Sampling,
)

SCHEMA = {
    "type": "object",
    "properties": {
        "title": {"type": "string"},
        "tags": {"type": "array", "items": {"type": "string"}},
        "notes": {"type": "string"},
    },
    "required": ["title", "tags", "notes"],
}
STREAMS = (1, 8)
PROMPT = "Describe the office in the morning, as JSON with a title, tags and notes."


@dataclass(frozen=True)
class Run:
    """One timed run: completion tokens over all streams, wall time, and valid documents."""

    tokens: int
    seconds: float
    valid: int

    @property
    def tps(self) -> float:
        """Aggregate tokens per second."""
        return self.tokens / self.seconds


def request(i: int, prompt: str, max_tokens: int, constrained: bool) -> GenerateRequest:
    """The i-th stream's request (greedy, so both arms decode alike)."""
    constraint = Constraint(ConstraintKind.JSON_SCHEMA, json.dumps(SCHEMA)) if constrained else None
    return GenerateRequest(
        request_id=f"{i}-{time.monotonic_ns()}",
        model="bench",
        messages=(ChatMessage("user", prompt),),
        sampling=Sampling(max_tokens=max_tokens, temperature=0.0),
        constraint=constraint,
    )


async def one(engine: Engine, req: GenerateRequest) -> tuple[int, bool]:
    """Completion tokens of one generation, and whether its text is a valid document."""
    text = []
    async for event in engine.generate(req):
        if isinstance(event, Delta):
            text.append(event.text)
        elif isinstance(event, Finished):
            return event.usage.completion_tokens, _valid("".join(text))
    raise RuntimeError("the stream ended without Finished")


def _valid(text: str) -> bool:
    try:
        jsonschema.validate(json.loads(text), SCHEMA)
    except (ValueError, jsonschema.ValidationError):
        return False
    return True


async def timed(
    engine: Engine, streams: int, prompt: str, args: argparse.Namespace, constrained: bool
) -> Run:
    """`streams` concurrent generations of the same prompt, timed together."""
    start = time.perf_counter()
    reqs = [request(i, prompt, args.max_tokens, constrained) for i in range(streams)]
    done = await asyncio.gather(*(one(engine, r) for r in reqs))
    return Run(sum(t for t, _ in done), time.perf_counter() - start, sum(v for _, v in done))


async def bench_engine(
    engine: Engine, args: argparse.Namespace
) -> dict[tuple[bool, int], list[Run]]:
    """Runs per (constrained, streams), warm-up first, arms interleaved."""
    runs: dict[tuple[bool, int], list[Run]] = {}
    for repeat in range(args.repeats + 1):
        for streams in STREAMS:
            prompt = f"Round {repeat}. {PROMPT}"  # a new prompt each round: no cache hits
            for constrained in (False, True) if repeat % 2 else (True, False):
                run = await timed(engine, streams, prompt, args, constrained)
                if repeat:
                    runs.setdefault((constrained, streams), []).append(run)
    return runs


def report(name: str, runs: dict[tuple[bool, int], list[Run]]) -> None:
    """One line per stream count: tokens/s of each arm, their ratio, tokens and validity."""
    print(
        f"\n{name}: streams  free tok/s  constrained tok/s  ratio  tokens free/constrained  valid"
    )
    for streams in STREAMS:
        free, held = runs[(False, streams)], runs[(True, streams)]
        f_tps = statistics.median(r.tps for r in free)
        c_tps = statistics.median(r.tps for r in held)
        valid = sum(r.valid for r in held)
        print(
            f"{name}: {streams:>7}  {f_tps:>10.1f}  {c_tps:>17.1f}  {c_tps / f_tps:>5.2f}"
            f"  {statistics.median(r.tokens for r in free):>10.0f}/"
            f"{statistics.median(r.tokens for r in held):<12.0f}"
            f"  {valid}/{streams * len(held)}"
        )


async def main(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = ensure_demo_model(Path(args.data_dir or tmp))
        for name in args.engines.split(","):
            engine = make_engine(name, available_memory_bytes)
            try:
                await engine.load(LoadSpec(name="bench", source=str(path), path=path))
                report(name, await bench_engine(engine, args))
            finally:
                await engine.close()


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.constrained",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--engines", default="mlx,vllm", help="comma-separated: mlx, vllm")
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--data-dir", default="", help="where the demo model is (default: temp)")
    return parser.parse_args()


if __name__ == "__main__":
    asyncio.run(main(parse_args()))
