"""The vLLM engine behind agents, on the real demo model: tools, grammars, thoughts, logprobs.

The demo model makes poor choices: unconstrained it never calls a tool, and inside a JSON
string it writes prose until it runs out of tokens. So the tools and schemas here bound their
strings, and every valid call or document is the grammar's doing. One engine for the module
(vLLM's CPU start takes a minute here); max_tokens stay small, as vLLM on a CPU is slow.
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import jsonschema
import llguidance
import llguidance.hf
import pytest
from transformers import AutoTokenizer

from node_agent.engines.base import LoadSpec
from node_agent.engines.grammar import grammar_for
from node_agent.errors import InvalidRequest
from node_agent.types import (
    CONSTRAINTS,
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
from tests.integration.engines import require_vllm

pytestmark = [pytest.mark.timeout(600), pytest.mark.filterwarnings("ignore::FutureWarning")]

WEATHER = Tool(
    name="get_weather",
    description="The weather in a city now.",
    parameters=json.dumps(
        {
            "type": "object",
            "properties": {
                "city": {"type": "string", "maxLength": 12},
                "unit": {"enum": ["celsius", "fahrenheit"]},
            },
            "required": ["city", "unit"],
            "additionalProperties": False,
        }
    ),
)
TIME = Tool(
    name="get_time",
    description="The time in a time zone.",
    parameters=json.dumps(
        {
            "type": "object",
            "properties": {"zone": {"type": "string", "maxLength": 8}},
            "required": ["zone"],
            "additionalProperties": False,
        }
    ),
)
TOOLS_ = (WEATHER, TIME)
ANSWER = {
    "type": "object",
    "properties": {
        "answer": {"enum": ["yes", "no"]},
        "confidence": {"type": "integer", "minimum": 0, "maximum": 9},
        "why": {"type": "string", "maxLength": 10},
    },
    "required": ["answer", "confidence", "why"],
    "additionalProperties": False,
}
GREEDY = Sampling(max_tokens=16, temperature=0.0)
CALL_ID = re.compile(r"^call_[0-9a-f]{24}$")
SEEDS = range(8)  # sampled turns: at least one of these thinks aloud


@pytest.fixture(scope="module")
async def engine(demo_model_dir: Path) -> AsyncIterator[Any]:
    """A vLLM engine with the demo model loaded."""
    require_vllm()
    from node_agent.engines.vllm import VllmEngine

    engine = VllmEngine()
    await engine.load(LoadSpec(name="demo", source="demo", path=demo_model_dir))
    yield engine
    await engine.close()


def ask(
    question: str = "What is the weather in Oslo?", sampling: Sampling = GREEDY, **kw: Any
) -> GenerateRequest:
    """A chat request for the demo model."""
    messages = (ChatMessage("user", question),)
    return GenerateRequest(
        request_id="agentic", model="demo", messages=messages, sampling=sampling, **kw
    )


async def run(engine: Any, request: GenerateRequest) -> tuple[list[GenerateEvent], Finished]:
    """All of a generation's events, checked against the contract's common rules."""
    events = [e async for e in engine.generate(request)]
    finished = events[-1]
    assert isinstance(finished, Finished)
    assert not any(isinstance(e, Finished) for e in events[:-1])
    first = events[0]
    assert not isinstance(first, Finished) and first.prompt_tokens > 0  # the prompt's counts
    assert all(e.prompt_tokens == 0 for e in events[1:-1])  # type: ignore[union-attr]
    assert sum(e.tokens for e in events[:-1]) == finished.usage.completion_tokens  # type: ignore[union-attr]
    return events[:-1], finished


def answer(events: list[GenerateEvent]) -> str:
    """The answer's text."""
    return "".join(e.text for e in events if isinstance(e, Delta))


def calls(events: list[GenerateEvent]) -> list[tuple[str, str, str]]:
    """The tool calls as (id, name, arguments), each streamed in the contract's order."""
    made: dict[int, list[Any]] = {}
    for e in events:
        if not isinstance(e, ToolCallDelta):
            continue
        if e.index not in made:  # first: the id and the name, nothing else
            assert e.index == len(made)
            assert CALL_ID.match(e.id) and e.name and not e.arguments and not e.done
            made[e.index] = [e.id, e.name, "", False]
            continue
        call = made[e.index]
        assert not call[3], "nothing follows done"
        assert not e.id and not e.name
        if e.done:
            call[3] = True
        else:
            call[2] += e.arguments
    assert all(call[3] for call in made.values()), "every call ends with done"
    return [(i, name, arguments) for i, name, arguments, _ in made.values()]


async def test_the_demo_model_has_every_agent_capability(engine: Any) -> None:
    (info,) = engine.models()
    assert info.capabilities == {TOOLS, REASONING, CONSTRAINTS, LOGPROBS}
    (status,) = engine.status()
    assert status.capabilities == info.capabilities


async def test_a_required_call_is_made_and_its_arguments_validate(engine: Any) -> None:
    request = ask(
        sampling=Sampling(max_tokens=64, temperature=0.0),
        tools=TOOLS_,
        tool_choice=ToolChoice(ToolChoiceMode.REQUIRED),
        parallel_tool_calls=False,
    )
    events, finished = await run(engine, request)
    assert finished.finish_reason == "tool_calls"
    ((_, name, arguments),) = calls(events)
    tool = {t.name: t for t in TOOLS_}[name]
    jsonschema.validate(json.loads(arguments), json.loads(tool.parameters))
    assert answer(events).strip() == ""  # the grammar leaves no room for prose


async def test_a_named_call_calls_that_tool(engine: Any) -> None:
    request = ask(
        sampling=Sampling(max_tokens=64, temperature=0.0),
        tools=TOOLS_,
        tool_choice=ToolChoice(ToolChoiceMode.NAMED, "get_time"),
    )
    events, finished = await run(engine, request)
    assert finished.finish_reason == "tool_calls"
    made = calls(events)
    assert made and all(name == "get_time" for _, name, _ in made)
    for _, _, arguments in made:
        jsonschema.validate(json.loads(arguments), json.loads(TIME.parameters))
    assert len({call_id for call_id, _, _ in made}) == len(made)


async def test_unconstrained_the_demo_model_just_answers(engine: Any) -> None:
    events, finished = await run(engine, ask(tools=TOOLS_))
    assert finished.finish_reason == "length" and not calls(events)
    assert answer(events)


async def test_a_json_schema_holds(engine: Any) -> None:
    request = ask(
        "Is it raining? Answer in JSON.",
        sampling=Sampling(max_tokens=48, temperature=0.0),
        constraint=Constraint(ConstraintKind.JSON_SCHEMA, json.dumps(ANSWER)),
    )
    events, finished = await run(engine, request)
    assert finished.finish_reason == "stop"
    jsonschema.validate(json.loads(answer(events)), ANSWER)
    assert not any(isinstance(e, ReasoningDelta) for e in events)  # constrained: no thinking


async def test_json_object_holds_from_the_first_token(engine: Any, demo_model_dir: Path) -> None:
    tokenizer = AutoTokenizer.from_pretrained(demo_model_dir)
    lltokenizer = llguidance.hf.from_tokenizer(tokenizer, len(tokenizer))
    for seed in SEEDS:
        request = ask(
            sampling=Sampling(max_tokens=16, temperature=1.0, seed=seed),
            constraint=Constraint(ConstraintKind.JSON_OBJECT),
        )
        events, finished = await run(engine, request)
        text = answer(events)
        # The demo model writes prose into a key until max_tokens: what it wrote must still be
        # the start of an object, as the request's own grammar reads it.
        matcher = llguidance.LLMatcher(lltokenizer, grammar_for(request, None) or "")
        assert matcher.consume_tokens(tokenizer.encode(text, add_special_tokens=False)), text
        if finished.finish_reason == "stop":
            assert matcher.is_accepting() and isinstance(json.loads(text), dict)


async def test_logprobs_come_with_each_answer_token(engine: Any) -> None:
    events, _ = await run(
        engine, ask(sampling=Sampling(max_tokens=6, temperature=0.0), top_logprobs=3)
    )
    deltas = [e for e in events if isinstance(e, Delta)]
    assert deltas and all(len(d.logprobs) == d.tokens for d in deltas)
    for d in deltas:
        for lp in d.logprobs:
            assert len(lp.top) == 3 and lp.logprob <= 0
            values = [t.logprob for t in lp.top]
            assert values == sorted(values, reverse=True) and all(v <= 0 for v in values)
            assert lp.logprob == pytest.approx(values[0], abs=1e-4)  # greedy took the likeliest
            assert lp.bytes == lp.token.encode()
    sampled_text = "".join(lp.token for d in deltas for lp in d.logprobs)
    assert answer(events) in sampled_text  # the answer's tokens (after the closing </think>)


async def test_top_logprobs_zero_gives_the_sampled_token_alone(engine: Any) -> None:
    events, _ = await run(
        engine, ask(sampling=Sampling(max_tokens=3, temperature=0.0), top_logprobs=0)
    )
    logprobs = [lp for e in events if isinstance(e, Delta) for lp in e.logprobs]
    assert logprobs and all(lp.top == () for lp in logprobs)
    events, _ = await run(engine, ask(sampling=Sampling(max_tokens=3, temperature=0.0)))
    assert all(not e.logprobs for e in events if isinstance(e, Delta))


async def test_a_thought_is_reasoning_and_comes_first(engine: Any) -> None:
    thought = None
    for seed in SEEDS:
        request = ask(sampling=Sampling(max_tokens=48, temperature=1.0, seed=seed))
        events, finished = await run(engine, request)
        if any(isinstance(e, ReasoningDelta) and e.text.strip() for e in events):
            thought = events, finished
            break
    assert thought is not None, "no sampled turn thought aloud"
    events, finished = thought
    kinds = [type(e) for e in events if e.text]  # type: ignore[union-attr]
    assert kinds[0] is ReasoningDelta and Delta in kinds
    assert ReasoningDelta not in kinds[kinds.index(Delta) :]  # one thought, then the answer
    assert "<think>" not in answer(events) and "</think>" not in answer(events)
    reasoning_tokens = finished.usage.reasoning_tokens
    assert 0 < reasoning_tokens < finished.usage.completion_tokens


async def test_no_thought_when_thinking_is_off(engine: Any) -> None:
    request = ask(
        sampling=Sampling(max_tokens=8, temperature=0.0),
        template_options='{"enable_thinking": false}',
    )
    events, finished = await run(engine, request)
    assert not any(isinstance(e, ReasoningDelta) for e in events)
    assert finished.usage.reasoning_tokens == 0


async def test_a_stop_string_ends_the_answer(engine: Any) -> None:
    events, _ = await run(engine, ask())
    full = answer(events)
    word = full.split()[2]
    events, finished = await run(
        engine, ask(sampling=Sampling(max_tokens=16, temperature=0.0, stop=(word,)))
    )
    assert finished.finish_reason == "stop"
    assert answer(events) == full[: full.index(word)]


@pytest.mark.parametrize(
    ("constraint", "needle"),
    [
        (Constraint(ConstraintKind.LARK, "start: nowhere\n"), "does not compile"),
        (Constraint(ConstraintKind.LARK, 'start: <|no_such_token|> "x"\n'), "special token"),
        (Constraint(ConstraintKind.JSON_SCHEMA, "{not json"), "cannot constrain"),
    ],
)
async def test_a_grammar_that_cannot_hold_is_an_invalid_request(
    engine: Any, constraint: Constraint, needle: str
) -> None:
    with pytest.raises(InvalidRequest, match=needle):
        await run(engine, ask(constraint=constraint))


async def test_too_many_top_logprobs_is_an_invalid_request(engine: Any) -> None:
    with pytest.raises(InvalidRequest, match="top_logprobs"):
        await run(engine, ask(top_logprobs=21))
