"""The MLX engine's incremental decoder over a byte-level toy vocabulary, and a request's events."""

from __future__ import annotations

from typing import Any

from node_agent.engines.mlx_stream import MAX_HELD, IncrementalDecoder, RequestStream
from node_agent.engines.parsing import OutputParser, dialect_for
from node_agent.types import Delta, ReasoningDelta, Sampling, TokenLogprob, ToolCallDelta

SNOWMAN = "☃".encode()  # three bytes
VOCAB = {0: b"a", 1: b" b", 2: SNOWMAN[:1], 3: SNOWMAN[1:2], 4: SNOWMAN[2:], 5: b"", 6: b"\xff"}


def decode(ids: list[int]) -> str:
    """Decode the toy vocabulary the way a byte-level BPE tokenizer does."""
    return b"".join(VOCAB[i] for i in ids).decode("utf-8", "replace")


def pieces(ids: list[int]) -> list[str]:
    """Every piece the decoder emits for `ids`, its flush last."""
    decoder = IncrementalDecoder(decode)
    return [decoder.add(i) for i in ids] + [decoder.flush()]


def test_a_character_split_over_tokens_comes_out_whole() -> None:
    out = pieces([0, 2, 3, 4, 1])
    assert out == ["a", "", "", "☃", " b", ""]


def test_leading_spaces_are_kept() -> None:
    assert "".join(pieces([1, 1])) == " b b"


def test_tokens_that_decode_to_nothing_keep_the_window_short() -> None:
    windows: list[int] = []

    def counting(ids: list[int]) -> str:
        windows.append(len(ids))
        return decode(ids)

    decoder = IncrementalDecoder(counting)
    assert [decoder.add(5) for _ in range(MAX_HELD * 4)] == [""] * MAX_HELD * 4
    assert decoder.add(0) == "a"
    assert max(windows) <= 2 * MAX_HELD


def test_invalid_bytes_are_released_as_replacement_characters() -> None:
    out = pieces([6] * MAX_HELD + [0])
    assert "".join(out) == "\ufffd" * MAX_HELD + "a"
    assert out[-2:] == ["a", ""]


# The request's events: the parser's answer, reasoning and calls; stops; logprobs.

HERMES = dialect_for("json_tools", think=("<think>", "</think>"))


class Collect:
    """A sink that keeps what it is given."""

    def __init__(self) -> None:
        self.events: list[Any] = []

    def put(self, event: Any) -> None:
        self.events.append(event)


def stream_of(text: str, *, stop: tuple[str, ...] = (), reasoning: bool = False) -> list[Any]:
    """Push `text` one character per token (then EOS) through a RequestStream; its events."""
    chars = sorted(set(text))
    sink = Collect()
    stream = RequestStream(
        ticket=1,
        sink=sink,  # type: ignore[arg-type]
        decoder=IncrementalDecoder(lambda ids: "".join(chars[i] for i in ids)),
        sampling=Sampling(stop=stop),
        prompt_tokens=7,
        cached_tokens=2,
        submitted_at=0.0,
        parser=OutputParser(HERMES, reasoning=reasoning),
    )
    for i, ch in enumerate(text):
        lp = TokenLogprob(ch, -float(i), ch.encode())
        stream.push(chars.index(ch), eos=False, logprob=lp)
        if stream.stopped:
            break
    else:
        stream.push(0, eos=True)
    stream.finish("stop")
    return sink.events


def test_the_first_event_of_any_kind_carries_the_prompt_counts() -> None:
    events = stream_of("Hm.</think>Yes.", reasoning=True)
    assert isinstance(events[0], ReasoningDelta)
    assert (events[0].prompt_tokens, events[0].cached_prompt_tokens) == (7, 2)
    assert not any(e.prompt_tokens for e in events[1:-1])
    assert events[-1].usage.reasoning_tokens == len("Hm.</think>")  # a token per character


def test_calls_end_as_tool_calls_and_every_token_is_counted() -> None:
    call = '<tool_call>\n{"name": "f", "arguments": {"a": 1}}\n</tool_call>'
    events = stream_of("Sure. " + call)
    calls = [e for e in events if isinstance(e, ToolCallDelta)]
    assert [c.name for c in calls if c.name] == ["f"]
    assert events[-1].finish_reason == "tool_calls"
    assert (
        sum(e.tokens for e in events[:-1])
        == events[-1].usage.completion_tokens
        == len("Sure. " + call) + 1
    )


def test_a_stop_string_cuts_the_answer_not_the_reasoning() -> None:
    events = stream_of("Stop here.</think>Go on. Stop here. Never.", stop=("Stop",), reasoning=True)
    reasoning = "".join(e.text for e in events if isinstance(e, ReasoningDelta))
    answer = "".join(e.text for e in events if isinstance(e, Delta))
    assert (reasoning, answer) == ("Stop here.", "Go on. ")
    assert events[-1].finish_reason == "stop"


def test_held_answer_text_goes_out_before_a_call() -> None:
    call = '<tool_call>\n{"name": "f", "arguments": {}}\n</tool_call>'
    events = stream_of("I will St" + call, stop=("Stop",))
    first_call = next(i for i, e in enumerate(events) if isinstance(e, ToolCallDelta))
    before = events[:first_call]
    assert all(isinstance(e, Delta) for e in before)
    assert "".join(e.text for e in before) == "I will St"  # "St" was held: it may begin "Stop"
    assert [e.done for e in events if isinstance(e, ToolCallDelta)] == [False, False, True]


def test_answer_deltas_carry_the_logprobs_of_their_tokens() -> None:
    events = stream_of("Hm.</think>Yes.", reasoning=True)
    deltas = [e for e in events if isinstance(e, Delta)]
    logprobs = [lp for d in deltas for lp in d.logprobs]
    # The answer's tokens, and the marker tokens it released; never the reasoning's.
    assert "".join(lp.token for lp in logprobs) == "</think>Yes."
