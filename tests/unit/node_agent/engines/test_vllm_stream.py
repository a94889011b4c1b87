"""A vLLM request's tally: vLLM's text deltas in; answer, reasoning, calls, logprobs, usage out."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass

from node_agent.engines.parsing import OutputParser, dialect_for
from node_agent.engines.vllm_stream import LOGPROB_FLOOR, Tally, token_logprobs
from node_agent.types import (
    Delta,
    ReasoningDelta,
    TokenEvent,
    TokenLogprob,
    Tool,
    ToolCallDelta,
    TopLogprob,
)

HERMES = dialect_for("json_tools", think=("<think>", "</think>"))
WEATHER = Tool(name="get_weather", parameters='{"type": "object"}')
CALL = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Oslo"}}\n</tool_call>'


@dataclass
class Logprob:
    """vLLM's Logprob, as far as the tally reads it."""

    logprob: float
    rank: int | None


def chat_tally(*, reasoning: bool = False, stops: tuple[str, ...] = ()) -> Tally:
    """A tally parsing a Hermes model's chat output."""
    parser = OutputParser(HERMES, tools=(WEATHER,), reasoning=reasoning)
    tally = Tally(prompt_tokens=10, submitted_at=0.0, parser=parser, stops=stops)
    tally.cached_tokens = 3
    return tally


def feed(tally: Tally, pieces: list[str]) -> list[TokenEvent]:
    """Each piece as one vLLM output of one token, then the end of the stream."""
    out: list[TokenEvent] = []
    for piece in pieces:
        out += tally.push(piece, 1)
    return out + tally.flush()


def test_tokens_without_text_ride_on_the_next_delta() -> None:
    tally = Tally(prompt_tokens=7, submitted_at=0.0)
    tally.cached_tokens = 4
    assert tally.push("", 1) == []  # vLLM's detokenizer holds part of a character back
    assert tally.push("Hello", 1) == [Delta("Hello", 2, 7, 4)]
    assert tally.push(" there", 1) == [Delta(" there", 1, 0, 0)]
    assert tally.push("", 1) == []
    assert tally.flush() == [Delta("", 1, 0, 0)]
    usage = tally.finish("length").usage
    assert (usage.prompt_tokens, usage.completion_tokens, usage.cached_prompt_tokens) == (7, 4, 4)
    assert usage.reasoning_tokens == 0


def test_a_thought_an_answer_and_a_call_in_order() -> None:
    tally = chat_tally(reasoning=True)
    pieces = ["Let me", " look.", "</think>", "\n\n", "Checking.", " ", *CALL]
    events = feed(tally, pieces)
    kinds = [type(e) for e in events]
    assert kinds[:2] == [ReasoningDelta, ReasoningDelta]
    assert (events[0].prompt_tokens, events[0].cached_prompt_tokens) == (10, 3)  # the first
    assert all(e.prompt_tokens == 0 for e in events[1:])
    assert "".join(e.text for e in events if isinstance(e, ReasoningDelta)) == "Let me look."
    assert "".join(e.text for e in events if isinstance(e, Delta)).strip() == "Checking."
    calls = [e for e in events if isinstance(e, ToolCallDelta)]
    assert calls[0].name == "get_weather" and calls[0].id.startswith("call_")
    assert len(calls[0].id) == len("call_") + 24
    assert json.loads("".join(c.arguments for c in calls)) == {"city": "Oslo"}
    assert calls[-1].done
    assert sum(e.tokens for e in events) == len(pieces)  # every token is carried exactly once
    finished = tally.finish("stop")
    assert finished.finish_reason == "tool_calls"
    assert finished.usage.reasoning_tokens == 3  # the thought and its closing </think>
    assert finished.usage.completion_tokens == len(pieces)


def test_a_call_that_was_cancelled_ends_cancelled() -> None:
    tally = chat_tally()
    feed(tally, list(CALL))
    assert tally.finish("cancelled").finish_reason == "cancelled"


def test_a_stop_string_cuts_the_answer_and_ends_the_generation() -> None:
    tally = chat_tally(stops=("END",))
    events = tally.push("one E", 1)
    assert events == [Delta("one ", 1, 10, 3)]  # "E" may start the stop string: held
    assert not tally.stopped
    events = tally.push("ND two", 1)
    assert tally.stopped and events == []
    assert tally.flush() == [Delta("", 1, 0, 0)]
    finished = tally.finish("length")
    assert (finished.finish_reason, finished.stop_sequence) == ("stop", "END")


def test_a_stop_string_in_a_thought_or_a_call_cuts_nothing() -> None:
    tally = chat_tally(reasoning=True, stops=("Oslo",))
    events = feed(tally, ["Oslo?", "</think>", *CALL])
    assert not tally.stopped
    assert "".join(e.text for e in events if isinstance(e, ReasoningDelta)) == "Oslo?"
    assert "Oslo" in "".join(e.arguments for e in events if isinstance(e, ToolCallDelta))


def test_answer_text_held_for_a_stop_string_goes_out_before_a_call() -> None:
    tally = chat_tally(stops=("STOP",))
    events = feed(tally, ["Sure ST", *CALL])
    assert [type(e) for e in events[:2]] == [Delta, Delta]
    assert "".join(e.text for e in events if isinstance(e, Delta)) == "Sure ST"
    assert isinstance(events[2], ToolCallDelta)


def test_logprobs_ride_on_the_answer_tokens() -> None:
    tally = Tally(prompt_tokens=1, submitted_at=0.0, stops=("zz",))
    first, second = TokenLogprob("a", -0.1), TokenLogprob("z", -0.2)
    assert tally.push("a", 1, [first]) == [Delta("a", 1, 1, 0, (first,))]
    assert tally.push("z", 1, [second]) == []  # held: "z" may start the stop string
    assert tally.flush() == [Delta("z", 1, 0, 0, (second,))]


def token_bytes(token: int) -> bytes:
    return {1: b"a", 2: b"b", 3: b"\xe2\x82"}.get(token, b"?")


def test_vllm_logprobs_become_the_sampled_token_and_its_top_k() -> None:
    positions = [
        {1: Logprob(-0.5, 1), 2: Logprob(-1.5, 2)},
        {3: Logprob(-4.0, 7), 1: Logprob(-0.1, 1), 2: Logprob(-math.inf, 2)},  # sampled 7th
    ]
    first, second = token_logprobs([1, 3], positions, 2, token_bytes)
    assert first == TokenLogprob(
        "a", -0.5, b"a", (TopLogprob("a", -0.5, b"a"), TopLogprob("b", -1.5, b"b"))
    )
    assert second.token == "\ufffd" and second.bytes == b"\xe2\x82"  # half a character
    assert second.logprob == -4.0
    assert second.top == (TopLogprob("a", -0.1, b"a"),)  # a masked token is no alternative


def test_no_alternatives_with_top_logprobs_zero_and_no_infinities() -> None:
    (only,) = token_logprobs([1], [{1: Logprob(0.0000001, 1)}], 0, token_bytes)
    assert only == TokenLogprob("a", 0.0, b"a", ())
    (floor,) = token_logprobs([2], [{2: Logprob(-math.inf, 9)}], 0, token_bytes)
    assert floor.logprob == LOGPROB_FLOOR
