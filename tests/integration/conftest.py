"""Fixtures of the integration tests: the agents the agent-API modules share."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.harness import AgentProcess, ClusterProcess, cluster_of, share_models
from tests.integration.engines import require_vllm


@pytest.fixture(scope="package")
def engine_agents(
    tmp_path_factory: pytest.TempPathFactory, demo_model_dir: Path
) -> Iterator[dict[str, AgentProcess]]:
    """`demo` on one MLX agent and one vLLM agent, shared by every module that serves the agent
    APIs (OpenAI chat, Anthropic Messages, Responses) through clusters of its own: vLLM's start
    on a small CPU takes a minute, once."""
    require_vllm()
    root = tmp_path_factory.mktemp("engines")
    started = {
        engine: AgentProcess(
            share_models(root / engine, demo_model_dir.parent),
            name=f"{engine}-node",
            args=("--model", "demo", "--engine", engine, "--no-mdns"),
        )
        for engine in ("mlx", "vllm")
    }
    try:
        for agent in started.values():
            agent.start(timeout=300)
        yield started
    finally:
        for agent in started.values():
            agent.stop()


@pytest.fixture(scope="module", params=["mlx", "vllm"])
def engine_cluster(
    request: pytest.FixtureRequest,
    engine_agents: dict[str, AgentProcess],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[ClusterProcess]:
    """A cluster whose one node is the package's agent of this parameter's engine, for each
    module that asks (the module's tests run once per engine)."""
    head = cluster_of(
        tmp_path_factory.mktemp(f"head-{request.param}"), engine_agents[request.param]
    )
    try:
        yield head
    finally:
        head.stop()
