"""The MLX engine on the real demo model: streaming, batching, caching, stops, errors, cancel."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import mlx_lm
import pytest
from mlx_lm.generate import stream_generate
from transformers import AutoTokenizer

from node_agent.engines.base import LoadSpec
from node_agent.engines.mlx import MlxEngine, available_memory_bytes
from node_agent.engines.mlx_stream import IncrementalDecoder
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

pytestmark = pytest.mark.timeout(120)

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
memory_budget: dict[str, int] = {}  # set "bytes" to pretend the node has that much free


@pytest.fixture(scope="module")
async def engine(demo_model_dir: Path) -> AsyncIterator[MlxEngine]:
    """One engine with the demo model loaded, shared by the module's tests."""
    mlx = MlxEngine(available_memory=lambda: memory_budget.get("bytes", available_memory_bytes()))
    await mlx.load(LoadSpec(name="demo", source="demo", path=demo_model_dir))
    yield mlx
    await mlx.close()


@pytest.fixture(scope="module")
def tokenizer(demo_model_dir: Path) -> Any:
    """The demo model's tokenizer, loaded independently of the engine."""
    return AutoTokenizer.from_pretrained(demo_model_dir)


def request(text: str = PROMPTS[0], sampling: Sampling = GREEDY, **kw: object) -> GenerateRequest:
    """A request for the demo model."""
    return GenerateRequest(request_id="t", model="demo", text=text, sampling=sampling, **kw)


async def run(engine: MlxEngine, req: GenerateRequest) -> tuple[str, Finished, list[Delta]]:
    """All of a generation: its text, its Finished, and its Deltas."""
    events: list[GenerateEvent] = [e async for e in engine.generate(req)]
    deltas = [e for e in events if isinstance(e, Delta)]
    assert all(isinstance(e, Delta) for e in events[:-1])
    assert isinstance(events[-1], Finished)
    return "".join(d.text for d in deltas), events[-1], deltas


def demo_status(engine: MlxEngine) -> ModelStatus:
    """The demo model's status."""
    return next(s for s in engine.status() if s.model == "demo")


async def wait_until(check: Callable[[], bool], timeout: float = 2.0) -> float:
    """Poll `check` until it holds; the seconds it took."""
    start = time.perf_counter()
    while not check():
        assert time.perf_counter() - start < timeout, "condition not reached in time"
        await asyncio.sleep(0.005)
    return time.perf_counter() - start


async def test_streams_deltas_then_one_finished(engine: MlxEngine, tokenizer: Any) -> None:
    text, finished, deltas = await run(engine, request())
    usage = finished.usage
    assert usage.prompt_tokens == len(tokenizer.encode(PROMPTS[0]))
    assert usage.completion_tokens == sum(d.tokens for d in deltas)
    assert (finished.finish_reason, usage.completion_tokens) == ("length", 16) or (
        finished.finish_reason == "stop" and usage.completion_tokens < 16  # the model's EOS
    )
    assert len(deltas) > 1 and text
    assert 0 < usage.ttft_seconds <= usage.duration_seconds
    assert usage.decode_tokens_per_second > 0


async def test_chat_messages_use_the_chat_template(engine: MlxEngine, tokenizer: Any) -> None:
    messages = (ChatMessage("system", "Be brief."), ChatMessage("user", "Hello there"))
    _, finished, _ = await run(engine, request(text=None, messages=messages))
    rendered = tokenizer.apply_chat_template(
        [{"role": m.role, "content": m.content} for m in messages],
        add_generation_prompt=True,
        tokenize=False,
    )
    ids = tokenizer.encode(rendered, add_special_tokens=False)
    assert finished.usage.prompt_tokens == len(ids)


async def test_greedy_text_is_mlx_lms_text(engine: MlxEngine, demo_model_dir: Path) -> None:
    model, wrapper = mlx_lm.load(str(demo_model_dir))  # the engine's thread is idle meanwhile
    for prompt in PROMPTS[:3]:
        ids = [r.token for r in stream_generate(model, wrapper, wrapper.encode(prompt), 16)]
        text, finished, deltas = await run(engine, request(prompt))
        assert text == wrapper.decode(ids)
        assert finished.usage.completion_tokens == sum(d.tokens for d in deltas) == len(ids)


async def test_eight_streams_share_one_batch(engine: MlxEngine, tokenizer: Any) -> None:
    before = demo_status(engine)
    peak = 0

    async def watch() -> None:
        nonlocal peak
        while True:
            s = demo_status(engine)
            peak = max(peak, s.running + s.waiting)
            await asyncio.sleep(0.002)

    watcher = asyncio.create_task(watch())
    results = await asyncio.gather(*(run(engine, request(p)) for p in PROMPTS))
    watcher.cancel()
    for prompt, (_, finished, deltas) in zip(PROMPTS, results, strict=True):
        assert finished.usage.prompt_tokens == len(tokenizer.encode(prompt))
        assert finished.usage.completion_tokens == sum(d.tokens for d in deltas)
    after = demo_status(engine)
    assert after.requests_finished - before.requests_finished == 8
    generated = sum(finished.usage.completion_tokens for _, finished, _ in results)
    assert after.generated_tokens - before.generated_tokens == generated
    assert peak > 1


async def test_greedy_output_is_the_same_alone_and_in_a_batch(engine: MlxEngine) -> None:
    alone = [(await run(engine, request(p)))[0] for p in PROMPTS[:4]]
    batched = await asyncio.gather(*(run(engine, request(p)) for p in PROMPTS))
    assert alone == [text for text, _, _ in batched[:4]]


async def test_a_seed_reproduces_the_sample_alone_and_in_a_batch(engine: MlxEngine) -> None:
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


async def test_closing_the_stream_frees_the_slot(engine: MlxEngine) -> None:
    before = demo_status(engine).requests_finished
    stream = engine.generate(request(sampling=Sampling(max_tokens=1500, temperature=0.0)))
    async for event in stream:
        assert isinstance(event, Delta)
        break
    await stream.aclose()
    await wait_until(lambda: demo_status(engine).running + demo_status(engine).waiting == 0, 1.0)
    assert demo_status(engine).requests_finished == before + 1
    _, finished, _ = await run(engine, request())
    assert finished.usage.completion_tokens > 0


async def test_cancelling_the_consumer_task_frees_the_slot(engine: MlxEngine) -> None:
    started = asyncio.Event()

    async def consume() -> None:
        async for _ in engine.generate(request(sampling=Sampling(max_tokens=1500))):
            started.set()

    task = asyncio.create_task(consume())
    await asyncio.wait_for(started.wait(), 5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await wait_until(lambda: demo_status(engine).running + demo_status(engine).waiting == 0, 1.0)


async def test_the_next_turn_reuses_the_cached_prefix(engine: MlxEngine) -> None:
    turn = (ChatMessage("user", "Tell me about the office."),)
    hits = demo_status(engine).prompt_cache_hits
    answer, first, _ = await run(engine, request(text=None, messages=turn))
    follow = (*turn, ChatMessage("assistant", answer), ChatMessage("user", "And the garden?"))
    _, second, _ = await run(engine, request(text=None, messages=follow))
    assert second.usage.cached_prompt_tokens >= first.usage.prompt_tokens - 1
    assert second.usage.cached_prompt_tokens < second.usage.prompt_tokens
    assert demo_status(engine).prompt_cache_hits > hits
    assert demo_status(engine).cached_prompt_tokens >= second.usage.cached_prompt_tokens


async def test_stop_string_ends_the_text_right_before_it(engine: MlxEngine) -> None:
    full, _, _ = await run(engine, request(PROMPTS[2], Sampling(max_tokens=24, temperature=0)))
    windows = (full[i : i + 3] for i in range(len(full) // 2, len(full) - 3))
    stop = next(w for w in windows if w.strip() and full.find(w) > 0)
    cut = full.find(stop)
    stopped = replace(GREEDY, max_tokens=24, stop=("never appears", stop))
    text, finished, deltas = await run(engine, request(PROMPTS[2], stopped))
    assert text == full[:cut]
    assert finished.finish_reason == "stop"
    assert finished.usage.completion_tokens == sum(d.tokens for d in deltas) < 24


async def test_max_tokens_gives_length_with_exactly_that_many(engine: MlxEngine) -> None:
    _, finished, deltas = await run(engine, request(sampling=replace(GREEDY, max_tokens=3)))
    assert finished.finish_reason == "length"
    assert finished.usage.completion_tokens == 3 == sum(d.tokens for d in deltas)


def test_the_decoder_never_splits_a_character(tokenizer: Any) -> None:
    text = "Héllo wörld, 日本語のテキスト, emoji 🙂 and more."
    ids = tokenizer.encode(text)
    decoder = IncrementalDecoder(tokenizer.decode)
    pieces = [decoder.add(i) for i in ids] + [decoder.flush()]
    assert "".join(pieces) == tokenizer.decode(ids)
    assert not any("\ufffd" in p for p in pieces)


BAD_SAMPLING = [
    Sampling(max_tokens=0),
    Sampling(max_tokens=4097),
    Sampling(temperature=-0.1),
    Sampling(temperature=2.5),
    Sampling(top_p=0.0),
    Sampling(top_p=1.5),
    Sampling(stop=("a", "b", "c", "d", "e")),
    Sampling(stop=("",)),
]


@pytest.mark.parametrize("sampling", BAD_SAMPLING)
async def test_bad_sampling_is_refused(engine: MlxEngine, sampling: Sampling) -> None:
    with pytest.raises(InvalidRequest):
        await run(engine, request(sampling=sampling))


@pytest.mark.parametrize(
    "req",
    [
        request(text=""),
        request(text=None),
        request(text=None, messages=()),
        request(text="hi", messages=(ChatMessage("user", "hi"),)),
    ],
)
async def test_empty_or_mixed_prompts_are_refused(engine: MlxEngine, req: GenerateRequest) -> None:
    with pytest.raises(InvalidRequest):
        await run(engine, req)


async def test_errors_leave_the_engine_serving(engine: MlxEngine, demo_model_dir: Path) -> None:
    with pytest.raises(PromptTooLong, match="2048"):
        await run(engine, request("word " * 3000))
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
    engine: MlxEngine, tmp_path: Path, demo_model_dir: Path
) -> None:
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json"):
        (tmp_path / name).write_bytes((demo_model_dir / name).read_bytes())
    (tmp_path / "model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(LoadFailed):
        await engine.load(LoadSpec(name="corrupt", source="x", path=tmp_path))
    assert [m.name for m in engine.models()] == ["demo"]


async def test_unload_cancels_running_requests(engine: MlxEngine, demo_model_dir: Path) -> None:
    spec = LoadSpec(name="second", source="demo", path=demo_model_dir, context_length=512)
    info = await engine.load(spec)
    assert info.context_length == 512 and info.memory_bytes > 0
    assert await engine.load(spec) == info  # loading the same name again changes nothing
    stream = engine.generate(replace(request(sampling=Sampling(max_tokens=500)), model="second"))
    first = await anext(stream)
    assert isinstance(first, Delta)
    await engine.unload("second")
    rest = [e async for e in stream]
    assert isinstance(rest[-1], Finished) and rest[-1].finish_reason == "cancelled"
    with pytest.raises(ModelNotLoaded):
        await run(engine, replace(request(), model="second"))


async def test_status_counters(engine: MlxEngine) -> None:
    before = demo_status(engine)
    _, finished, _ = await run(engine, request())
    after = demo_status(engine)
    assert after.generated_tokens == before.generated_tokens + finished.usage.completion_tokens
    assert after.prompt_tokens > before.prompt_tokens
    assert after.requests_finished == before.requests_finished + 1
    assert after.busy_seconds > before.busy_seconds
    assert after.memory_bytes > engine.models()[0].memory_bytes > 0
    assert after.running == after.waiting == 0


async def test_a_closed_engine_refuses_work(demo_model_dir: Path) -> None:
    mlx = MlxEngine()
    await mlx.load(LoadSpec(name="demo", source="demo", path=demo_model_dir))
    stream = mlx.generate(request(sampling=Sampling(max_tokens=500)))
    assert isinstance(await anext(stream), Delta)
    await mlx.close()
    rest = [e async for e in stream]
    assert isinstance(rest[-1], Finished) and rest[-1].finish_reason == "cancelled"
    with pytest.raises(AgentError, match="closed"):
        await run(mlx, request())
    await mlx.close()  # closing twice is harmless


async def test_the_first_delta_carries_the_prompt_counts(engine: MlxEngine) -> None:
    _, finished, deltas = await run(
        engine, request(PROMPTS[1], Sampling(max_tokens=6, temperature=0))
    )
    first, rest = deltas[0], deltas[1:]
    assert first.prompt_tokens == finished.usage.prompt_tokens > 0
    assert first.cached_prompt_tokens == finished.usage.cached_prompt_tokens
    assert all(d.prompt_tokens == 0 and d.cached_prompt_tokens == 0 for d in rest)
