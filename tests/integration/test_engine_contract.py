"""The Engine contract, held to by every engine on the real demo model: MLX and vLLM alike.

One engine per engine kind for the whole module (vLLM takes seconds to start); tests leave it
as they found it. vLLM runs its CPU build here, the same code as on a GPU box.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from transformers import AutoTokenizer

from node_agent.demo_model import CONTEXT
from node_agent.engines.base import Engine, LoadSpec
from node_agent.engines.common import available_memory_bytes
from node_agent.errors import (
    AgentError,
    InvalidRequest,
    LoadFailed,
    ModelNotLoaded,
    OutOfMemory,
    PromptTooLong,
)
from node_agent.types import (
    ChatMessage,
    Delta,
    Finished,
    GenerateEvent,
    GenerateRequest,
    ModelStatus,
    Sampling,
)
from tests.integration.engines import ENGINES, require_vllm

pytestmark = [pytest.mark.timeout(300), pytest.mark.filterwarnings("ignore::FutureWarning")]

PROMPTS = (
    "Once upon a time",
    "The market opens at eight.",
    "A model is a large file of numbers.",
    "Good code is easy to read.",
    "The weather was cold",
    "Reading is the other thing",
    "The children walked to school",
    "What does it cost to own a computer?",
)
GREEDY = Sampling(max_tokens=16, temperature=0.0)
LONG = Sampling(max_tokens=1500, temperature=0.0)
# Long enough to fill whole blocks of vLLM's prefix cache (128 tokens on its CPU backend).
SYSTEM = "You are a helpful assistant in a quiet office, and you answer in plain words. " * 20
memory_budget: dict[str, int] = {}  # set "bytes" to pretend the node has that much free


def budgeted_memory() -> int:
    """Available memory, or the pretend budget a test has set."""
    return memory_budget.get("bytes", available_memory_bytes())


def new_engine(kind: str, max_steps_per_s: float = 0.0) -> Engine:
    """A fresh engine of `kind`, seeing the pretend memory budget."""
    if kind == "vllm":
        require_vllm()
        from node_agent.engines.vllm import VllmEngine

        return VllmEngine(available_memory=budgeted_memory, max_steps_per_s=max_steps_per_s)
    from node_agent.engines.mlx import MlxEngine

    return MlxEngine(available_memory=budgeted_memory, max_steps_per_s=max_steps_per_s)


@pytest.fixture(scope="module", params=ENGINES)
async def engine(request: pytest.FixtureRequest, demo_model_dir: Path) -> AsyncIterator[Engine]:
    """One engine of each kind with the demo model loaded, shared by the module's tests."""
    started = time.perf_counter()
    engine = new_engine(request.param)
    await engine.load(LoadSpec(name="demo", source="demo", path=demo_model_dir))
    print(f"{request.param}: engine and demo model up in {time.perf_counter() - started:.1f}s")
    yield engine
    await engine.close()


@pytest.fixture(scope="module")
def tokenizer(demo_model_dir: Path) -> Any:
    """The demo model's tokenizer, loaded independently of the engines."""
    return AutoTokenizer.from_pretrained(demo_model_dir)


def request(text: str = PROMPTS[0], sampling: Sampling = GREEDY, **kw: object) -> GenerateRequest:
    """A request for the demo model."""
    return GenerateRequest(request_id="t", model="demo", text=text, sampling=sampling, **kw)


def chat(*messages: ChatMessage, sampling: Sampling = GREEDY) -> GenerateRequest:
    """A chat request for the demo model."""
    return GenerateRequest(request_id="c", model="demo", messages=messages, sampling=sampling)


async def run(engine: Engine, req: GenerateRequest) -> tuple[str, Finished, list[Delta]]:
    """All of a generation: its text, its Finished, and its Deltas."""
    events: list[GenerateEvent] = [e async for e in engine.generate(req)]
    deltas = [e for e in events if isinstance(e, Delta)]
    assert all(isinstance(e, Delta) for e in events[:-1])
    assert isinstance(events[-1], Finished)
    return "".join(d.text for d in deltas), events[-1], deltas


def demo_status(engine: Engine) -> ModelStatus:
    """The demo model's status."""
    return next(s for s in engine.status() if s.model == "demo")


def idle(engine: Engine) -> bool:
    """Whether the demo model has nothing running or waiting."""
    status = demo_status(engine)
    return status.running + status.waiting == 0


async def wait_until(check: Callable[[], bool], timeout: float = 2.0) -> None:
    """Poll `check` until it holds."""
    start = time.perf_counter()
    while not check():
        assert time.perf_counter() - start < timeout, "condition not reached in time"
        await asyncio.sleep(0.005)


async def test_streams_deltas_then_one_finished(engine: Engine, tokenizer: Any) -> None:
    text, finished, deltas = await run(engine, request())
    usage = finished.usage
    assert usage.prompt_tokens == len(tokenizer.encode(PROMPTS[0]))
    assert usage.completion_tokens == sum(d.tokens for d in deltas)
    assert (finished.finish_reason, usage.completion_tokens) == ("length", 16)
    assert len(deltas) > 1 and text
    assert 0 < usage.ttft_seconds <= usage.duration_seconds
    assert usage.decode_tokens_per_second > 0
    first, rest = deltas[0], deltas[1:]
    assert (first.prompt_tokens, first.cached_prompt_tokens) == (usage.prompt_tokens, 0)
    assert all(d.prompt_tokens == d.cached_prompt_tokens == 0 for d in rest)


async def test_completion_tokens_are_the_tokenizers_count(engine: Engine, tokenizer: Any) -> None:
    for prompt in PROMPTS[:4]:
        text, finished, _ = await run(engine, request(prompt))
        assert finished.usage.completion_tokens == 16
        assert len(tokenizer.encode(text, add_special_tokens=False)) == 16, text


async def test_chat_messages_use_the_chat_template(engine: Engine, tokenizer: Any) -> None:
    messages = (ChatMessage("system", "Be brief."), ChatMessage("user", "Hello there"))
    _, finished, _ = await run(engine, chat(*messages))
    rendered = tokenizer.apply_chat_template(
        [{"role": m.role, "content": m.content} for m in messages],
        add_generation_prompt=True,
        tokenize=False,
    )
    assert finished.usage.prompt_tokens == len(tokenizer.encode(rendered, add_special_tokens=False))


async def test_eight_concurrent_streams(engine: Engine, tokenizer: Any) -> None:
    before, peak, kv_usage = demo_status(engine), 0, 0.0

    async def watch() -> None:
        nonlocal peak, kv_usage
        while True:
            s = demo_status(engine)
            peak, kv_usage = max(peak, s.running + s.waiting), max(kv_usage, s.kv_cache_usage)
            await asyncio.sleep(0.002)

    watcher = asyncio.create_task(watch())
    many = replace(GREEDY, max_tokens=32)
    results = await asyncio.gather(*(run(engine, request(p, many)) for p in PROMPTS))
    watcher.cancel()
    for prompt, (_, finished, deltas) in zip(PROMPTS, results, strict=True):
        assert finished.usage.prompt_tokens == len(tokenizer.encode(prompt))
        assert finished.usage.completion_tokens == sum(d.tokens for d in deltas) == 32
    after = demo_status(engine)
    assert after.requests_finished - before.requests_finished == 8
    assert after.generated_tokens - before.generated_tokens == 8 * 32
    assert peak > 1
    assert 0 < kv_usage <= 1 if engine.name == "vllm" else kv_usage == 0  # MLX has no fixed pool


async def test_greedy_output_is_the_same_alone_and_in_a_batch(engine: Engine) -> None:
    alone = [(await run(engine, request(p)))[0] for p in PROMPTS[:4]]
    batched = await asyncio.gather(*(run(engine, request(p)) for p in PROMPTS))
    assert alone == [text for text, _, _ in batched[:4]]


async def test_a_seed_reproduces_the_sample_alone_and_in_a_batch(engine: Engine) -> None:
    sampled = Sampling(max_tokens=16, temperature=1.0, top_p=0.9, seed=1234)
    first, _, _ = await run(engine, request(sampling=sampled))
    second, _, _ = await run(engine, request(sampling=sampled))
    crowd = await asyncio.gather(
        run(engine, request(sampling=sampled)),
        *(run(engine, request(p, replace(sampled, seed=i))) for i, p in enumerate(PROMPTS)),
    )
    other, _, _ = await run(engine, request(sampling=replace(sampled, seed=99)))
    assert first == second == crowd[0][0]
    assert other != first


async def test_closing_the_stream_frees_the_slot(engine: Engine) -> None:
    before = demo_status(engine).requests_finished
    stream = engine.generate(request(sampling=LONG))
    async for event in stream:
        assert isinstance(event, Delta)
        break
    await stream.aclose()  # type: ignore[attr-defined]
    await wait_until(lambda: idle(engine), 2.0)
    assert demo_status(engine).requests_finished == before + 1
    _, finished, _ = await run(engine, request())
    assert finished.usage.completion_tokens > 0


async def test_cancelling_the_consumer_task_frees_the_slot(engine: Engine) -> None:
    started = asyncio.Event()

    async def consume() -> None:
        async for _ in engine.generate(request(sampling=replace(LONG, temperature=1.0))):
            started.set()

    task = asyncio.create_task(consume())
    await asyncio.wait_for(started.wait(), 10)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await wait_until(lambda: idle(engine), 2.0)


async def test_stop_string_ends_the_text_right_before_it(engine: Engine) -> None:
    full, _, _ = await run(engine, request(PROMPTS[2], Sampling(max_tokens=24, temperature=0)))
    windows = (full[i : i + 3] for i in range(len(full) // 2, len(full) - 3))
    stop = next(w for w in windows if w.strip() and full.find(w) > 0)
    cut = full.find(stop)
    stopped = replace(GREEDY, max_tokens=24, stop=("never appears", stop))
    text, finished, deltas = await run(engine, request(PROMPTS[2], stopped))
    assert text == full[:cut]
    assert finished.finish_reason == "stop"
    assert finished.usage.completion_tokens == sum(d.tokens for d in deltas) < 24


async def test_max_tokens_gives_length_with_exactly_that_many(engine: Engine) -> None:
    _, finished, deltas = await run(engine, request(sampling=replace(GREEDY, max_tokens=3)))
    assert finished.finish_reason == "length"
    assert finished.usage.completion_tokens == 3 == sum(d.tokens for d in deltas)


async def test_the_next_turn_hits_the_prefix_cache(engine: Engine) -> None:
    turn = (ChatMessage("system", SYSTEM), ChatMessage("user", "Tell me about the office."))
    hits, cached = demo_status(engine).prompt_cache_hits, demo_status(engine).cached_prompt_tokens
    answer, first, _ = await run(engine, chat(*turn))
    follow = (*turn, ChatMessage("assistant", answer), ChatMessage("user", "And the garden?"))
    _, second, deltas = await run(engine, chat(*follow))
    assert first.usage.prompt_tokens > 256
    assert first.usage.prompt_tokens // 2 <= second.usage.cached_prompt_tokens
    assert second.usage.cached_prompt_tokens < second.usage.prompt_tokens
    assert deltas[0].cached_prompt_tokens == second.usage.cached_prompt_tokens
    after = demo_status(engine)
    assert after.prompt_cache_hits > hits
    assert after.cached_prompt_tokens - cached >= second.usage.cached_prompt_tokens


async def test_status_counters(engine: Engine) -> None:
    before = demo_status(engine)
    _, finished, _ = await run(engine, request())
    after = demo_status(engine)
    assert after.generated_tokens == before.generated_tokens + finished.usage.completion_tokens
    assert after.prompt_tokens == before.prompt_tokens + finished.usage.prompt_tokens
    assert after.requests_finished == before.requests_finished + 1
    assert after.busy_seconds > before.busy_seconds
    assert after.memory_bytes >= engine.models()[0].memory_bytes > 0
    assert after.running == after.waiting == 0


BAD_SAMPLING = [
    Sampling(max_tokens=0),
    Sampling(temperature=-0.1),
    Sampling(temperature=2.5),
    Sampling(top_p=0.0),
    Sampling(top_p=1.5),
    Sampling(stop=("a", "b", "c", "d", "e")),
    Sampling(stop=("",)),
]
BAD_PROMPTS = [
    request(text=""),
    request(text=None),
    request(text=None, messages=()),
    request(text="hi", messages=(ChatMessage("user", "hi"),)),
]


@pytest.mark.parametrize("req", [request(sampling=s) for s in BAD_SAMPLING] + BAD_PROMPTS)
async def test_bad_requests_are_refused(engine: Engine, req: GenerateRequest) -> None:
    with pytest.raises(InvalidRequest):
        await run(engine, req)


async def test_errors_leave_the_engine_serving(engine: Engine, demo_model_dir: Path) -> None:
    with pytest.raises(PromptTooLong, match=str(CONTEXT)):
        await run(engine, request("word " * (CONTEXT + 100)))
    with pytest.raises(ModelNotLoaded):
        await run(engine, replace(request(), model="nope"))
    with pytest.raises(ModelNotLoaded):
        await engine.unload("nope")
    with pytest.raises(LoadFailed):
        await engine.load(LoadSpec(name="x", source="x", path=demo_model_dir / "missing"))
    memory_budget["bytes"] = 1 << 20
    try:
        with pytest.raises(OutOfMemory, match="available"):
            await engine.load(LoadSpec(name="big", source="demo", path=demo_model_dir))
    finally:
        memory_budget.clear()
    assert [m.name for m in engine.models()] == ["demo"]
    _, finished, _ = await run(engine, request())
    assert finished.usage.completion_tokens > 0


async def test_corrupt_files_fail_to_load(
    engine: Engine, tmp_path: Path, demo_model_dir: Path
) -> None:
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json"):
        (tmp_path / name).write_bytes((demo_model_dir / name).read_bytes())
    (tmp_path / "model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(LoadFailed):
        await engine.load(LoadSpec(name="corrupt", source="x", path=tmp_path))
    assert [m.name for m in engine.models()] == ["demo"]


async def test_unload_cancels_running_requests(engine: Engine, demo_model_dir: Path) -> None:
    spec = LoadSpec(name="second", source="demo", path=demo_model_dir, context_length=512)
    info = await engine.load(spec)
    assert info.context_length == 512 and info.memory_bytes > 0
    assert await engine.load(spec) == info  # loading the same name again changes nothing
    # Greedy: a sampled stream may end on its own (an end-of-text token) before the unload.
    stream = engine.generate(
        replace(request(sampling=replace(GREEDY, max_tokens=500)), model="second")
    )
    assert isinstance(await anext(stream), Delta)
    await engine.unload("second")
    rest = [e async for e in stream]
    assert isinstance(rest[-1], Finished) and rest[-1].finish_reason == "cancelled"
    with pytest.raises(ModelNotLoaded):
        await run(engine, replace(request(), model="second"))
    assert [m.name for m in engine.models()] == ["demo"]


@pytest.mark.parametrize("kind", ENGINES)
async def test_a_slowed_engine_keeps_its_pace_and_a_closed_one_refuses_work(
    kind: str, demo_model_dir: Path
) -> None:
    # One fresh engine for both: a vLLM start costs half a minute here.
    engine = new_engine(kind, max_steps_per_s=40)
    await engine.load(LoadSpec(name="demo", source="demo", path=demo_model_dir))
    _, finished, _ = await run(engine, request(sampling=replace(GREEDY, max_tokens=12)))
    usage = finished.usage
    assert usage.duration_seconds - usage.ttft_seconds >= 11 / 40 * 0.9
    stream = engine.generate(request(sampling=LONG))
    assert isinstance(await anext(stream), Delta)
    await engine.close()
    rest = [e async for e in stream]
    assert isinstance(rest[-1], Finished) and rest[-1].finish_reason == "cancelled"
    with pytest.raises(AgentError, match="closed"):
        await run(engine, request())
    await engine.close()  # closing twice is harmless
