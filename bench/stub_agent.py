"""A node agent that answers at once: the real gRPC service over an engine that does no work.

    .venv/bin/python -m bench.stub_agent --port 50200

For benchmarks of the gateway: with a node that costs nothing, the gateway is the bottleneck.
It serves one model, `demo`, and answers every generation with `max_tokens` tokens ("ok", one
delta each, as an engine streams them) and usage of 5 prompt tokens and that many completion
tokens.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import grpc.aio

from node_agent.engines.base import LoadSpec
from node_agent.hardware import Memory
from node_agent.node_facts import NodeFacts, Probe
from node_agent.proto import PROTOCOL_VERSION, pb_grpc
from node_agent.service import SERVER_OPTIONS, AgentService
from node_agent.types import (
    CostProfile,
    Delta,
    Finished,
    GenerateEvent,
    GenerateRequest,
    Hardware,
    ModelInfo,
    ModelStatus,
    Usage,
)

MODEL = "demo"
USAGE = Usage(
    prompt_tokens=5,
    completion_tokens=1,
    cached_prompt_tokens=0,
    ttft_seconds=0.0,
    decode_tokens_per_second=0.0,
    duration_seconds=0.0,
)


class StubEngine:
    """An engine with `demo` always loaded that answers every request at once."""

    name = "mlx"

    def __init__(self) -> None:
        self.generated = 0
        self.finished = 0

    async def load(self, spec: LoadSpec) -> ModelInfo:
        """Nothing to load."""
        return self.models()[0]

    async def unload(self, name: str) -> None:
        """Nothing to unload."""

    def models(self) -> list[ModelInfo]:
        """The one model."""
        return [
            ModelInfo(name=MODEL, engine="mlx", source="stub", memory_bytes=0, context_length=4096)
        ]

    def status(self) -> list[ModelStatus]:
        """Counters as a real engine reports them."""
        return [
            ModelStatus(
                model=MODEL,
                running=0,
                waiting=0,
                generated_tokens=self.generated,
                prompt_tokens=5 * self.finished,
                cached_prompt_tokens=0,
                prompt_cache_hits=0,
                requests_finished=self.finished,
                memory_bytes=0,
                busy_seconds=self.finished * 0.001,
            )
        ]

    async def generate(self, request: GenerateRequest) -> AsyncIterator[GenerateEvent]:
        """`max_tokens` tokens, then Finished."""
        n = max(1, request.sampling.max_tokens)
        yield Delta("ok", 1, USAGE.prompt_tokens, 0)
        for _ in range(n - 1):
            yield Delta("ok", 1)
        self.generated += n
        self.finished += 1
        yield Finished("length" if n > 1 else "stop", replace(USAGE, completion_tokens=n))

    async def close(self) -> None:
        """Nothing to close."""


async def serve(port: int, name: str) -> None:
    """Serve the stub until cancelled."""
    hardware = Hardware(
        accelerator_kind="cpu",
        accelerator_name="stub",
        accelerator_count=1,
        accelerator_memory_bytes=1 << 30,
        memory_total_bytes=1 << 30,
        memory_available_bytes=1 << 30,
        os="linux",
        arch="x86_64",
    )
    facts = NodeFacts(
        node_id=f"stub{port}",
        name=name,
        agent_version="stub",
        protocol_version=PROTOCOL_VERSION,
        engines=("mlx",),
        hardware=hardware,
        cost=CostProfile(price_usd=1000.0, idle_watts=5.0, busy_watts=20.0, kwh_usd=0.25),
    )
    with tempfile.TemporaryDirectory(prefix="stub-agent-") as tmp:
        service = AgentService(
            facts=facts,
            engine=StubEngine(),
            data_dir=Path(tmp),
            probe=lambda: Probe(Memory(1 << 30, 1 << 29), None),
        )
        server = grpc.aio.server(options=SERVER_OPTIONS)
        pb_grpc.add_AgentServicer_to_server(service, server)  # type: ignore[no-untyped-call]
        server.add_insecure_port(f"127.0.0.1:{port}")
        await server.start()
        print(f"stub agent listening on 127.0.0.1:{port}", flush=True)
        await server.wait_for_termination()


def main() -> None:
    """Parse the flags and serve."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--name", default="stub")
    args = parser.parse_args()
    try:
        asyncio.run(serve(args.port, args.name))
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
