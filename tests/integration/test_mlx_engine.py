"""What only the MLX engine promises; the Engine contract itself is test_engine_contract.py."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import mlx_lm
import pytest
from mlx_lm.generate import stream_generate
from transformers import AutoTokenizer

from node_agent.engines.base import LoadSpec
from node_agent.engines.mlx import MlxEngine
from node_agent.engines.mlx_stream import IncrementalDecoder
from node_agent.types import ChatMessage, Delta, Finished, GenerateEvent, GenerateRequest, Sampling

pytestmark = pytest.mark.timeout(120)

PROMPTS = ("Once upon a time", "The market opens at eight.", "A model is a large file of numbers.")
GREEDY = Sampling(max_tokens=16, temperature=0.0)


@pytest.fixture(scope="module")
async def engine(demo_model_dir: Path) -> AsyncIterator[MlxEngine]:
    """One engine with the demo model loaded, shared by the module's tests."""
    mlx = MlxEngine()
    await mlx.load(LoadSpec(name="demo", source="demo", path=demo_model_dir))
    yield mlx
    await mlx.close()


@pytest.fixture(scope="module")
def tokenizer(demo_model_dir: Path) -> Any:
    """The demo model's tokenizer, loaded independently of the engine."""
    return AutoTokenizer.from_pretrained(demo_model_dir)


def request(text: str | None = PROMPTS[0], **kw: Any) -> GenerateRequest:
    """A greedy request for the demo model."""
    return GenerateRequest(request_id="t", model="demo", text=text, sampling=GREEDY, **kw)


async def run(engine: MlxEngine, req: GenerateRequest) -> tuple[str, Finished, list[Delta]]:
    """All of a generation: its text, its Finished, and its Deltas."""
    events: list[GenerateEvent] = [e async for e in engine.generate(req)]
    deltas = [e for e in events if isinstance(e, Delta)]
    assert isinstance(events[-1], Finished)
    return "".join(d.text for d in deltas), events[-1], deltas


async def test_greedy_text_is_mlx_lms_text(engine: MlxEngine, demo_model_dir: Path) -> None:
    model, wrapper = mlx_lm.load(str(demo_model_dir))  # the engine's thread is idle meanwhile
    for prompt in PROMPTS:
        ids = [r.token for r in stream_generate(model, wrapper, wrapper.encode(prompt), 16)]
        text, finished, deltas = await run(engine, request(prompt))
        assert text == wrapper.decode(ids)
        assert finished.usage.completion_tokens == sum(d.tokens for d in deltas) == len(ids)


async def test_the_next_turn_reuses_all_but_the_last_prompt_token(engine: MlxEngine) -> None:
    turn = (ChatMessage("user", "Tell me about the office."),)
    answer, first, _ = await run(engine, request(None, messages=turn))
    follow = (*turn, ChatMessage("assistant", answer), ChatMessage("user", "And the garden?"))
    _, second, _ = await run(engine, request(None, messages=follow))
    # Token-exact prefix reuse: only the last prompt token is run again, for its logits.
    assert second.usage.cached_prompt_tokens >= first.usage.prompt_tokens - 1


async def test_memory_grows_with_the_kv_caches(engine: MlxEngine) -> None:
    await run(engine, request())
    status = next(s for s in engine.status() if s.model == "demo")
    assert status.memory_bytes > engine.models()[0].memory_bytes > 0


def test_the_decoder_never_splits_a_character(tokenizer: Any) -> None:
    text = "Héllo wörld, 日本語のテキスト, emoji 🙂 and more."
    ids = tokenizer.encode(text)
    decoder = IncrementalDecoder(tokenizer.decode)
    pieces = [decoder.add(i) for i in ids] + [decoder.flush()]
    assert "".join(pieces) == tokenizer.decode(ids)
    assert not any("\ufffd" in p for p in pieces)
