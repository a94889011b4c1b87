"""What only the MLX engine promises; the Engine contract itself is test_engine_contract.py."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import jsonschema
import llguidance
import llguidance.hf
import mlx_lm
import pytest
from mlx_lm.generate import stream_generate
from transformers import AutoTokenizer

from node_agent.engines.base import LoadSpec
from node_agent.engines.common import render_prompt
from node_agent.engines.grammar import constraint_grammar
from node_agent.engines.mlx import MlxEngine
from node_agent.engines.mlx_stream import IncrementalDecoder
from node_agent.errors import InvalidRequest
from node_agent.types import (
    CONSTRAINTS,
    EMBEDDINGS,
    LOGPROBS,
    REASONING,
    TOOLS,
    ChatMessage,
    Constraint,
    ConstraintKind,
    Delta,
    Finished,
    GenerateEvent,
    GenerateRequest,
    ReasoningDelta,
    Sampling,
    Tool,
    ToolCallDelta,
    ToolChoice,
    ToolChoiceMode,
)

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
    model, wrapper = mlx_lm.load(str(demo_model_dir))[:2]  # the engine's thread is idle meanwhile
    for prompt in PROMPTS:
        ids = [r.token for r in stream_generate(model, wrapper, wrapper.encode(prompt), 16)]
        text, finished, deltas = await run(engine, request(prompt))
        assert text == wrapper.decode(ids)
        assert finished.usage.completion_tokens == sum(d.tokens for d in deltas) == len(ids)


async def test_the_next_turn_reuses_the_prefix_it_shares(engine: MlxEngine, tokenizer: Any) -> None:
    turn = (ChatMessage("user", "Tell me about the office."),)
    answer, first, _ = await run(engine, request(None, messages=turn))
    follow = (*turn, ChatMessage("assistant", answer), ChatMessage("user", "And the garden?"))
    _, second, _ = await run(engine, request(None, messages=follow))
    # Token-exact prefix reuse: all that the two prompts share (a thinking template drops the
    # think block from past turns) but the last token, run again for its logits.
    ids = [render_prompt(tokenizer, request(None, messages=m)) for m in (turn, follow)]
    shared = next(i for i, (a, b) in enumerate(zip(*ids, strict=False)) if a != b)
    assert second.usage.cached_prompt_tokens >= shared - 1
    assert first.usage.cached_prompt_tokens == 0


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


# Tools, reasoning, grammars and logprobs. The demo model's own choices are poor: it is the
# grammar that makes its calls and documents valid, which is what these tests hold it to.

WEATHER_SCHEMA = {
    "type": "object",
    "properties": {
        "city": {"type": "string", "maxLength": 24},
        "days": {"type": "integer", "minimum": 1, "maximum": 7},
    },
    "required": ["city", "days"],
    "additionalProperties": False,
}
WEATHER = Tool(
    name="get_weather", description="The forecast", parameters=json.dumps(WEATHER_SCHEMA)
)
CLOCK = Tool(name="get_time", parameters='{"type": "object", "additionalProperties": false}')
PERSON = {
    "type": "object",
    "properties": {"name": {"type": "string", "maxLength": 20}, "age": {"type": "integer"}},
    "required": ["name", "age"],
    "additionalProperties": False,
}
ASK = (ChatMessage("user", "What is the weather in Oslo this week?"),)
CHAT = Sampling(max_tokens=96, temperature=0.0)


def chat(**kw: Any) -> GenerateRequest:
    """A greedy chat request for the demo model."""
    kw.setdefault("sampling", CHAT)
    return GenerateRequest(request_id="c", model="demo", messages=ASK, **kw)


async def events_of(engine: MlxEngine, req: GenerateRequest) -> list[GenerateEvent]:
    return [e async for e in engine.generate(req)]


def calls_in(events: list[GenerateEvent]) -> list[tuple[str, dict[str, Any]]]:
    """Each call as (name, arguments), checking the order of its three kinds of event."""
    calls = [e for e in events if isinstance(e, ToolCallDelta)]
    out = []
    for i in sorted({c.index for c in calls}):
        head, *args, done = [c for c in calls if c.index == i]
        assert re.fullmatch(r"call_[0-9a-f]{24}", head.id) and head.name and done.done
        out.append((head.name, json.loads("".join(a.arguments for a in args))))
    return out


def text_of(events: list[GenerateEvent], kind: type[Delta | ReasoningDelta] = Delta) -> str:
    return "".join(
        e.text for e in events if isinstance(e, Delta | ReasoningDelta) and type(e) is kind
    )


def test_the_demo_model_has_every_capability(engine: MlxEngine) -> None:
    (info,) = engine.models()
    assert info.capabilities == {TOOLS, REASONING, CONSTRAINTS, LOGPROBS, EMBEDDINGS}


async def test_a_load_without_a_tool_parser_offers_no_tools(
    engine: MlxEngine, demo_model_dir: Path
) -> None:
    spec = LoadSpec(
        name="plain", source="demo", path=demo_model_dir, options={"tool_parser": "none"}
    )
    info = await engine.load(spec)
    await engine.unload("plain")
    assert TOOLS not in info.capabilities and REASONING in info.capabilities
    assert TOOLS in {m.name: m for m in engine.models()}["demo"].capabilities
    with pytest.raises(InvalidRequest, match="json_tools"):
        await engine.load(replace(spec, options={"tool_parser": "toolish"}))


async def test_a_required_call_is_a_valid_call(engine: MlxEngine) -> None:
    req = chat(tools=(WEATHER, CLOCK), tool_choice=ToolChoice(ToolChoiceMode.REQUIRED))
    events = await events_of(engine, replace(req, parallel_tool_calls=False))
    ((name, arguments),) = calls_in(events)
    assert name in ("get_weather", "get_time")
    if name == "get_weather":
        jsonschema.validate(arguments, WEATHER_SCHEMA)
    assert isinstance(events[-1], Finished) and events[-1].finish_reason == "tool_calls"
    first, *streamed = [e for e in events if not isinstance(e, Finished)]
    assert first.prompt_tokens > 0 and not any(e.prompt_tokens for e in streamed)
    assert first.tokens + sum(e.tokens for e in streamed) == events[-1].usage.completion_tokens


async def test_a_named_call_calls_that_tool_with_valid_arguments(engine: MlxEngine) -> None:
    choice = ToolChoice(ToolChoiceMode.NAMED, "get_weather")
    req = chat(tools=(CLOCK, WEATHER), tool_choice=choice, parallel_tool_calls=False)
    ((name, arguments),) = calls_in(await events_of(engine, req))
    assert name == "get_weather"
    jsonschema.validate(arguments, WEATHER_SCHEMA)


async def test_a_json_schema_answer_validates(engine: MlxEngine) -> None:
    req = chat(constraint=Constraint(ConstraintKind.JSON_SCHEMA, json.dumps(PERSON)))
    events = await events_of(engine, req)
    jsonschema.validate(json.loads(text_of(events)), PERSON)
    assert isinstance(events[-1], Finished) and events[-1].finish_reason == "stop"


async def test_a_json_object_answer_is_an_object(engine: MlxEngine, tokenizer: Any) -> None:
    # Any object may have any keys, and the demo model never ends a string by choice: it may run
    # out of tokens inside a key. What it wrote is then still the start of an object.
    constraint = Constraint(ConstraintKind.JSON_OBJECT)
    lltokenizer = llguidance.hf.from_tokenizer(tokenizer)
    for seed in range(4):
        sampling = Sampling(max_tokens=64, temperature=1.0, seed=seed)
        events = await events_of(engine, chat(constraint=constraint, sampling=sampling))
        matcher = llguidance.LLMatcher(lltokenizer, constraint_grammar(constraint))
        assert matcher.consume_tokens(lltokenizer.tokenize_str(text_of(events)))
        finished = events[-1]
        assert isinstance(finished, Finished)
        if finished.finish_reason == "stop":
            assert matcher.is_accepting() and isinstance(json.loads(text_of(events)), dict)


async def test_a_grammar_that_does_not_compile_is_refused(engine: MlxEngine) -> None:
    with pytest.raises(InvalidRequest, match="grammar"):
        await events_of(engine, chat(constraint=Constraint(ConstraintKind.LARK, "start: (")))


async def test_logprobs_come_with_the_top_alternatives(engine: MlxEngine) -> None:
    _, finished, deltas = await run(engine, request(top_logprobs=3))
    logprobs = [lp for d in deltas for lp in d.logprobs]
    assert len(logprobs) == finished.usage.completion_tokens == 16
    for lp in logprobs:
        assert lp.logprob <= 0 and len(lp.top) == 3
        assert all(t.logprob <= 0 for t in lp.top) and lp.top[0].logprob == lp.logprob
        assert lp.token == lp.top[0].token  # greedy: the sampled token is the likeliest
    assert "".join(lp.token for lp in logprobs) == "".join(d.text for d in deltas)


async def test_constrained_and_free_requests_share_one_batch(engine: MlxEngine) -> None:
    peak = 0

    async def watch() -> None:
        nonlocal peak
        while True:
            s = next(s for s in engine.status() if s.model == "demo")
            peak = max(peak, s.running + s.waiting)
            await asyncio.sleep(0.002)

    schema = Constraint(ConstraintKind.JSON_SCHEMA, json.dumps(PERSON))
    reqs = [chat(constraint=schema if i % 2 else None) for i in range(8)]
    watcher = asyncio.create_task(watch())
    results = await asyncio.gather(*(events_of(engine, r) for r in reqs))
    watcher.cancel()
    assert peak == 8
    for req, events in zip(reqs, results, strict=True):
        assert isinstance(events[-1], Finished)
        if req.constraint is not None:
            jsonschema.validate(json.loads(text_of(events)), PERSON)


async def test_reasoning_is_split_from_the_answer(engine: MlxEngine) -> None:
    # Greedy, the demo model thinks nothing; sampled, it thinks a sentence or two.
    for seed in range(8):
        sampling = Sampling(max_tokens=96, temperature=1.0, seed=seed)
        events = await events_of(engine, chat(sampling=sampling))
        if text_of(events, ReasoningDelta).strip():
            break
    thought, answer = text_of(events, ReasoningDelta), text_of(events)
    assert thought.strip() and "<think>" not in thought + answer and "</think>" not in answer
    kinds = [type(e) for e in events if isinstance(e, Delta | ReasoningDelta) and e.text]
    assert kinds == sorted(kinds, key=lambda k: k is Delta)  # all reasoning, then the answer
    finished = events[-1]
    assert isinstance(finished, Finished) and 0 < finished.usage.reasoning_tokens


async def test_a_constrained_request_is_told_not_to_think(engine: MlxEngine) -> None:
    req = chat(constraint=Constraint(ConstraintKind.JSON_OBJECT))
    events = await events_of(engine, req)
    assert not any(isinstance(e, ReasoningDelta) and e.text for e in events)
