"""The node agent as a process: real gRPC, the real MLX engine, the generated demo model."""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import itertools
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import grpc
import grpc.aio
import pytest

from node_agent.demo_model import CONTEXT
from node_agent.proto import PROTOCOL_VERSION, pb, pb_grpc
from node_agent.types import AGENT_CAPABILITIES
from tests.integration.engines import require_vllm
from tests.integration.running_agent import RunningAgent, data_dir_sharing_models

pytestmark = pytest.mark.timeout(180)

Stub = pb_grpc.AgentStub
SYSTEM = pb.ChatMessage(role="system", content="You are a helpful assistant in a quiet office.")


@pytest.fixture(scope="module")
def agent(tmp_path_factory: pytest.TempPathFactory, demo_model_dir: Path) -> Iterator[RunningAgent]:
    """One agent serving `demo`, shared by the tests that leave it as they found it."""
    data = data_dir_sharing_models(tmp_path_factory.mktemp("agent"), demo_model_dir)
    running = RunningAgent(
        data,
        args=(
            "--model",
            "demo",
            "--no-mdns",
            "--name",
            "desk-1",
            "--price-usd",
            "1399",
            "--kwh-usd",
            "0.31",
            "--busy-watts",
            "40",
            "--status-interval-ms",
            "100",
        ),
    ).start()
    yield running
    assert running.stop() == 0, running.log()


@pytest.fixture(scope="module")
async def stub(agent: RunningAgent) -> AsyncIterator[Stub]:
    """A gRPC stub on one channel to the shared agent."""
    async with grpc.aio.insecure_channel(agent.address) as channel:
        yield pb_grpc.AgentStub(channel)


def text_request(
    text: str, max_tokens: int = 16, model: str = "demo", **sampling: object
) -> pb.GenerateRequest:
    """A raw-text GenerateRequest."""
    return pb.GenerateRequest(
        model=model, text=text, sampling=pb.Sampling(max_tokens=max_tokens, **sampling)
    )


def chat_request(*turns: tuple[str, str], max_tokens: int = 16) -> pb.GenerateRequest:
    """A chat GenerateRequest (greedy) after the system prompt."""
    messages = [SYSTEM, *(pb.ChatMessage(role=r, content=c) for r, c in turns)]
    return pb.GenerateRequest(
        model="demo",
        chat=pb.Chat(messages=messages),
        sampling=pb.Sampling(max_tokens=max_tokens, temperature=0.0),
    )


async def collect(stub: Stub, request: pb.GenerateRequest) -> tuple[list[pb.Delta], pb.Finished]:
    """Every Delta of a generation, and its Finished (which must come last, once)."""
    deltas, finished = [], []
    async for response in stub.Generate(request, timeout=60):
        assert not finished, "nothing may follow Finished"
        if response.HasField("delta"):
            deltas.append(response.delta)
        else:
            finished.append(response.finished)
    assert len(finished) == 1
    return deltas, finished[0]


async def first_status(stub: Stub) -> pb.NodeStatus:
    """The status stream's first message."""
    call = stub.WatchStatus(pb.WatchStatusRequest(interval_ms=50))
    try:
        return await call.read()
    finally:
        call.cancel()


async def wait_status(
    stub: Stub, predicate: Callable[[pb.NodeStatus], bool], timeout: float
) -> tuple[pb.NodeStatus, float]:
    """The first status for which `predicate` holds, and how long it took to come."""
    start = time.monotonic()
    call = stub.WatchStatus(pb.WatchStatusRequest(interval_ms=50))
    try:
        async with asyncio.timeout(timeout):
            async for status in call:
                if predicate(status):
                    return status, time.monotonic() - start
    finally:
        call.cancel()
    raise AssertionError("the status stream ended")


def demo_status(status: pb.NodeStatus) -> pb.ModelStatus:
    """The demo model's entry in a NodeStatus."""
    return next(m for m in status.models if m.model == "demo")


async def load_events(
    stub: Stub, request: pb.LoadModelRequest
) -> tuple[list[pb.LoadProgress], grpc.StatusCode]:
    """Every LoadProgress of a load, and the call's final status code."""
    call = stub.LoadModel(request, timeout=60)
    events = []
    with contextlib.suppress(grpc.aio.AioRpcError):  # a failed load ends with its status code
        async for event in call:
            events.append(event)
    return events, await call.code()


async def expect_error(call: object, code: grpc.StatusCode) -> str:
    """Drain a call that must fail with `code`; its details."""
    with pytest.raises(grpc.aio.AioRpcError) as failure:
        if hasattr(call, "__aiter__"):
            async for _ in call:  # type: ignore[attr-defined]
                pass
        else:
            await call  # type: ignore[misc]
    assert failure.value.code() == code, failure.value.details()
    return failure.value.details() or ""


# --- identity and description ------------------------------------------------------------------


async def test_describe(agent: RunningAgent, stub: Stub) -> None:
    info = await stub.Describe(pb.DescribeRequest(), timeout=5)
    assert info.node_id == agent.node_id and agent.models == "demo"
    assert info.hostname == "desk-1" and info.protocol_version == PROTOCOL_VERSION
    assert "mlx" in info.engines and info.agent_version
    assert info.accelerator.kind in ("cpu", "apple", "nvidia") and info.accelerator.name
    assert info.memory_total_bytes >= info.memory_available_bytes > 0
    assert (info.cost.price_usd, info.cost.kwh_usd, info.cost.busy_watts) == (1399, 0.31, 40)
    assert info.cost.amortize_months == 36 and info.os and info.arch
    [model] = [m for m in info.models if m.name == "demo"]
    assert (model.engine, model.source) == ("mlx", "demo")
    assert model.context_length > 0 and model.memory_bytes > 0
    [disk] = [d for d in info.disk_models if d.source == "demo"]  # what placement sizes it by
    assert disk.weights_bytes > 0 and disk.kv_bytes_per_token > 0
    assert disk.context_length == model.context_length
    assert set(info.capabilities) == AGENT_CAPABILITIES


async def test_list_models(stub: Stub) -> None:
    reply = await stub.ListModels(pb.ListModelsRequest(), timeout=5)
    assert "demo" in [m.name for m in reply.models]


async def test_status_stream_keeps_its_interval(stub: Stub) -> None:
    call = stub.WatchStatus(pb.WatchStatusRequest(interval_ms=100))
    stamps, statuses = [], []
    async for status in call:
        stamps.append(time.monotonic())
        statuses.append(status)
        if len(stamps) == 4:
            break
    call.cancel()
    status = statuses[-1]
    assert status.node_id and status.uptime_seconds > 0 and status.unix_ms > 0
    assert status.memory_used_bytes > 0 and status.memory_available_bytes > 0
    assert status.power_measured or status.power_watts == 0
    gaps = [b - a for a, b in itertools.pairwise(stamps)]
    assert all(0.05 < gap < 0.5 for gap in gaps), gaps


# --- generation --------------------------------------------------------------------------------


async def test_generate_text_streams_deltas_then_finished(stub: Stub) -> None:
    deltas, finished = await collect(stub, text_request("The office is quiet", max_tokens=24))
    assert deltas and finished.finish_reason in ("stop", "length")
    usage = finished.usage
    assert usage.prompt_tokens > 0 and usage.completion_tokens == sum(d.tokens for d in deltas)
    assert 0 < usage.ttft_seconds <= usage.duration_seconds
    assert "".join(d.text for d in deltas)


async def test_generate_chat(stub: Stub) -> None:
    deltas, finished = await collect(stub, chat_request(("user", "Tell me about the market.")))
    assert finished.usage.prompt_tokens > 10  # the chat template wraps the turns
    assert finished.usage.completion_tokens == sum(d.tokens for d in deltas)


async def test_count_tokens_is_the_prompt_generate_would_see(stub: Stub) -> None:
    chat = chat_request(("user", "Tell me about the market."))
    counted = await stub.CountTokens(chat, timeout=10)
    _, finished = await collect(stub, chat)
    assert counted.prompt_tokens == finished.usage.prompt_tokens > 10
    absent = chat_request(("user", "hi"))
    absent.model = "absent"
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.CountTokens(absent, timeout=10)
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION


async def test_eight_concurrent_requests_are_batched(stub: Stub) -> None:
    peak = 0

    async def watch() -> None:
        nonlocal peak
        async for status in stub.WatchStatus(pb.WatchStatusRequest(interval_ms=50)):
            peak = max(peak, demo_status(status).running)

    watcher = asyncio.create_task(watch())
    results = await asyncio.gather(
        *(
            collect(stub, text_request(f"Question number {i}:", max_tokens=48, temperature=0.8))
            for i in range(8)
        )
    )
    watcher.cancel()
    assert all(f.usage.completion_tokens > 0 for _, f in results)
    assert peak > 1, "the engine should run several requests at once"


async def test_closing_the_stream_cancels_the_generation(stub: Stub) -> None:
    call = stub.Generate(text_request("A long story:", max_tokens=1500, temperature=1.0))
    async for _ in call:
        break  # one delta in: the generation is running
    call.cancel()
    _, waited = await wait_status(stub, lambda s: demo_status(s).running == 0, timeout=5)
    assert waited < 2.0, f"the slot was freed only after {waited:.1f}s"
    _, finished = await collect(stub, text_request("And then", max_tokens=8))
    assert finished.usage.completion_tokens > 0


async def test_a_repeated_conversation_prefix_hits_the_prompt_cache(stub: Stub) -> None:
    first_turn = ("user", "Tell me how bread is made, step by step, with flour, water and salt.")
    _, first = await collect(stub, chat_request(first_turn))
    before = demo_status(await first_status(stub))
    _, second = await collect(
        stub, chat_request(first_turn, ("assistant", "Flour and water."), ("user", "And then?"))
    )
    assert second.usage.cached_prompt_tokens > 0
    after = demo_status(await first_status(stub))
    assert after.cached_prompt_tokens > before.cached_prompt_tokens
    assert after.prompt_cache_hits > before.prompt_cache_hits
    assert after.requests_finished >= before.requests_finished + 1
    assert first.usage.prompt_tokens < second.usage.prompt_tokens


async def test_node_wide_counters_grow(stub: Stub) -> None:
    before = await first_status(stub)
    await collect(stub, text_request("Count", max_tokens=8))
    after = await first_status(stub)
    assert after.busy_seconds > before.busy_seconds
    assert demo_status(after).generated_tokens > demo_status(before).generated_tokens
    assert after.uptime_seconds > before.uptime_seconds


# --- loading and unloading ---------------------------------------------------------------------


async def test_reload_reports_progress(stub: Stub) -> None:
    unloaded = await stub.UnloadModel(pb.UnloadModelRequest(model="demo"), timeout=30)
    assert unloaded.unloaded
    events, code = await load_events(stub, pb.LoadModelRequest(model="demo"))
    stages = [e.stage for e in events]
    assert stages[0] == pb.LoadProgress.RESOLVING and stages[-1] == pb.LoadProgress.READY
    assert pb.LoadProgress.LOADING in stages and code == grpc.StatusCode.OK
    assert events[-1].model.name == "demo" and events[-1].model.context_length > 0
    _, finished = await collect(stub, text_request("Back again", max_tokens=4))
    assert finished.usage.completion_tokens > 0


async def test_loading_a_missing_path_fails_with_the_path_in_the_reason(stub: Stub) -> None:
    events, code = await load_events(stub, pb.LoadModelRequest(model="/no/such/model-dir"))
    assert events[0].stage == pb.LoadProgress.RESOLVING
    assert events[-1].stage == pb.LoadProgress.FAILED and "/no/such/model-dir" in events[-1].message
    assert code == grpc.StatusCode.NOT_FOUND


async def test_generate_after_unload_is_failed_precondition(stub: Stub) -> None:
    events, _ = await load_events(stub, pb.LoadModelRequest(model="demo", name="demo-copy"))
    assert events[-1].model.name == "demo-copy"
    await collect(stub, text_request("Hello", max_tokens=2, model="demo-copy"))
    reply = await stub.UnloadModel(pb.UnloadModelRequest(model="demo-copy"), timeout=30)
    assert reply.unloaded
    call = stub.Generate(text_request("Hello", model="demo-copy"))
    assert "demo-copy" in await expect_error(call, grpc.StatusCode.FAILED_PRECONDITION)
    again = await stub.UnloadModel(pb.UnloadModelRequest(model="demo-copy"), timeout=30)
    assert not again.unloaded


# --- bad input ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("request_", "code", "needle"),
    [
        (text_request("x", temperature=5.0), grpc.StatusCode.INVALID_ARGUMENT, "temperature"),
        (text_request("x", top_p=0.0), grpc.StatusCode.INVALID_ARGUMENT, "top_p"),
        (text_request("x", stop=[""]), grpc.StatusCode.INVALID_ARGUMENT, "stop"),
        (pb.GenerateRequest(model="demo"), grpc.StatusCode.INVALID_ARGUMENT, "empty"),
        (
            text_request("word " * (CONTEXT + 100)),
            grpc.StatusCode.OUT_OF_RANGE,  # its own code: the gateway says context_length_exceeded
            "context length",
        ),
        (
            text_request("x", model="no-such-model"),
            grpc.StatusCode.FAILED_PRECONDITION,
            "no-such-model",
        ),
    ],
    ids=[
        "temperature",
        "top_p",
        "empty-stop",
        "no-prompt",
        "prompt-too-long",
        "unknown-model",
    ],
)
async def test_bad_generate_requests_are_refused_with_a_reason(
    stub: Stub, request_: pb.GenerateRequest, code: grpc.StatusCode, needle: str
) -> None:
    details = await expect_error(stub.Generate(request_, timeout=30), code)
    assert needle in details


async def test_a_corrupt_model_fails_to_load_with_the_engine_reason(
    stub: Stub, tmp_path: Path, demo_model_dir: Path
) -> None:
    broken = tmp_path / "broken-model"
    shutil.copytree(demo_model_dir, broken)
    (broken / "model.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{bad json")
    events, code = await load_events(stub, pb.LoadModelRequest(model=str(broken)))
    assert [e.stage for e in events][-2:] == [pb.LoadProgress.LOADING, pb.LoadProgress.FAILED]
    assert str(broken) in events[-1].message and code == grpc.StatusCode.INTERNAL


async def test_bad_load_requests(stub: Stub) -> None:
    bad_engine = stub.LoadModel(pb.LoadModelRequest(model="demo", engine="tpu"))
    assert "tpu" in await expect_error(bad_engine, grpc.StatusCode.INVALID_ARGUMENT)
    other_engine = stub.LoadModel(pb.LoadModelRequest(model="demo", engine="vllm"))
    await expect_error(other_engine, grpc.StatusCode.UNAVAILABLE)
    events, code = await load_events(stub, pb.LoadModelRequest(model="not a model reference"))
    assert events[-1].stage == pb.LoadProgress.FAILED and code == grpc.StatusCode.NOT_FOUND


async def test_the_agent_still_serves_after_all_of_that(agent: RunningAgent, stub: Stub) -> None:
    _, finished = await collect(stub, chat_request(("user", "Still there?")))
    assert finished.usage.completion_tokens > 0
    assert agent.proc is not None and agent.proc.poll() is None
    assert "Traceback" not in agent.stderr.read_text()  # every refusal above was expected


# --- process life ------------------------------------------------------------------------------


async def test_restart_keeps_the_node_id_and_memory_cap_refuses_a_load(
    tmp_path: Path, demo_model_dir: Path
) -> None:
    data = data_dir_sharing_models(tmp_path / "data", demo_model_dir)
    first = RunningAgent(data, args=("--no-mdns", "--model", "/no/such/dir")).start()
    assert first.models == "none"  # the model failed; the agent serves anyway
    assert first.stop(signal.SIGINT) == 0, first.log()
    assert "model /no/such/dir not loaded: no model directory" in first.stderr.read_text()
    second = RunningAgent(
        data, args=("--no-mdns",), env={"METERLESS_MEMORY_LIMIT_BYTES": str(4 * 2**20)}
    ).start()
    try:
        async with grpc.aio.insecure_channel(second.address) as channel:
            stub = pb_grpc.AgentStub(channel)
            info = await stub.Describe(pb.DescribeRequest(), timeout=5)
            assert second.node_id == first.node_id == info.node_id
            assert info.memory_total_bytes <= 4 * 2**20
            events, code = await load_events(stub, pb.LoadModelRequest(model="demo"))
            assert events[-1].stage == pb.LoadProgress.FAILED
            assert "needs about" in events[-1].message
            assert code == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert not (await stub.ListModels(pb.ListModelsRequest(), timeout=5)).models
    finally:
        assert second.stop() == 0, second.log()


def test_a_taken_port_is_refused_in_one_line(agent: RunningAgent) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "node_agent",
            "--host",
            "127.0.0.1",
            "--port",
            str(agent.port),
            "--no-mdns",
            "--data-dir",
            str(agent.data_dir),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert f"node-agent: error: cannot listen on 127.0.0.1:{agent.port}" in result.stderr


def test_an_engine_this_node_lacks_is_refused_in_one_line(tmp_path: Path) -> None:
    if importlib.util.find_spec("vllm") is not None:
        pytest.skip("this node may well run vllm")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "node_agent",
            "--engine",
            "vllm",
            "--port",
            "0",
            "--no-mdns",
            "--data-dir",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    last = result.stderr.splitlines()[-1]
    assert result.returncode == 1
    assert last.startswith("node-agent: error: engine 'vllm' is not available on this node")


@pytest.mark.timeout(400)
@pytest.mark.parametrize(
    ("engine", "option", "needle"),
    [
        ("mlx", "dtype=float32", "unknown MLX option 'dtype'"),
        ("mlx", "prompt_cache_entries=none", "MLX option prompt_cache_entries: 'none' is not"),
        ("vllm", "swap_space=4", "unknown vLLM option 'swap_space'"),
        (
            "vllm",
            "gpu_memory_utilization=2",
            "vLLM option gpu_memory_utilization: '2' must be in (0, 1]",
        ),
    ],
)
def test_a_bad_engine_option_is_refused_in_one_line(
    engine: str, option: str, needle: str, tmp_path: Path
) -> None:
    if engine == "vllm":
        require_vllm()
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "node_agent",
            "--engine",
            engine,
            "--engine-option",
            option,
            "--port",
            "0",
            "--no-mdns",
            "--data-dir",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=300,  # importing vLLM takes a while
    )
    assert result.returncode == 1
    assert result.stderr.splitlines()[-1].startswith(f"node-agent: error: {needle}")


def test_bad_flags_exit_2_in_one_line() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "node_agent", "--port", "eleven"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2 and result.stderr.count("\n") == 1
    assert "'eleven' is not a whole number" in result.stderr
