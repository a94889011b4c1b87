"""One request's side of the vLLM engine: vLLM's deltas in; answer, reasoning, calls and Usage out.

vLLM detokenizes. The output parser (parsing.OutputParser, the one the MLX engine uses) splits
the text into answer, reasoning and tool calls, so a model parses the same on either engine.
Stop strings apply here to the answer only, as on MLX (vLLM is not given them): one inside a
thought or a call's arguments cuts nothing. Logprobs ride on the answer's Deltas.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from node_agent.engines.parsing import Dialect, OutputParser
from node_agent.stops import StopFilter
from node_agent.types import (
    Delta,
    Finished,
    TokenEvent,
    TokenLogprob,
    TopLogprob,
    Usage,
)

TokenBytes = Callable[[int], bytes]
LOGPROB_FLOOR = -9999.0  # OpenAI's value for a token that could not have been sampled


class Tally:
    """Token counts and timings of one request, and the events its outputs make."""

    def __init__(
        self,
        *,
        prompt_tokens: int,
        submitted_at: float,
        parser: OutputParser | None = None,
        stops: Sequence[str] = (),
    ) -> None:
        self.prompt_tokens, self.submitted_at = prompt_tokens, submitted_at
        self.cached_tokens = 0
        self.completion_tokens = 0
        self.outputs = 0
        self.first_token_at: float | None = None
        self._parser = parser or OutputParser(Dialect())
        self._stops = StopFilter(stops)
        self._logprobs: list[TokenLogprob] = []  # of tokens fed, not yet carried by an event
        self._unsent_tokens = 0  # answer tokens whose text the stop filter still holds
        self._unsent_logprobs: list[TokenLogprob] = []
        self._sent = False

    @property
    def stopped(self) -> bool:
        """Whether a stop string has appeared in the answer."""
        return self._stops.stopped

    def push(
        self, text: str, tokens: int, logprobs: Sequence[TokenLogprob] = ()
    ) -> list[TokenEvent]:
        """Take one output of vLLM: its new text and token count; the events it releases."""
        self.outputs += 1
        if tokens and self.first_token_at is None:
            self.first_token_at = time.perf_counter()
        self.completion_tokens += tokens
        self._logprobs += logprobs
        return self._send(self._parser.feed(text, tokens))

    def flush(self) -> list[TokenEvent]:
        """At the end: what the parser and the stop filter hold, then any tokens not yet sent."""
        events = self._send(self._parser.finish())
        return events + self._release(self._stops.flush(), force=True)

    def finish(self, reason: str) -> Finished:
        """The closing event: a generation that made calls ends "tool_calls"."""
        if reason != "cancelled":
            if self._parser.made_calls:
                reason = "tool_calls"
            elif self._stops.stopped:
                reason = "stop"
        return Finished(reason, self.usage(), self._stops.matched if reason == "stop" else "")

    def usage(self) -> Usage:
        """Token counts and timings as of now."""
        now = time.perf_counter()
        first = self.first_token_at if self.first_token_at is not None else now
        decoded, decode_time = self.completion_tokens - 1, now - first
        tps = decoded / decode_time if decoded > 0 and decode_time > 0 else 0.0
        return Usage(
            prompt_tokens=self.prompt_tokens,
            completion_tokens=self.completion_tokens,
            cached_prompt_tokens=self.cached_tokens,
            ttft_seconds=first - self.submitted_at,
            decode_tokens_per_second=tps,
            duration_seconds=now - self.submitted_at,
            reasoning_tokens=self._parser.reasoning_tokens,
        )

    def _send(self, events: list[TokenEvent]) -> list[TokenEvent]:
        """The parser's events to send: answer text through the stop filter, the rest as is."""
        out: list[TokenEvent] = []
        for event in events:
            logprobs = self._logprobs[: event.tokens]
            del self._logprobs[: event.tokens]
            if self._stops.stopped:  # past a stop string nothing more is said; tokens still count
                self._unsent_tokens += event.tokens
            elif isinstance(event, Delta):
                self._unsent_tokens += event.tokens
                self._unsent_logprobs += logprobs
                out += self._release(self._stops.feed(event.text), force=False)
            else:  # answer text held for a stop string goes out before a call or a thought
                out += self._release(self._stops.flush(), force=False)
                out.append(self._first(_plus(event, self._unsent_tokens)))
                self._unsent_tokens, self._unsent_logprobs = 0, []
        return out

    def _release(self, text: str, *, force: bool) -> list[TokenEvent]:
        """A Delta of answer text with its unsent tokens; `force` sends a bare count too."""
        if not text and not (force and self._unsent_tokens):
            return []
        delta = Delta(text, self._unsent_tokens, logprobs=tuple(self._unsent_logprobs))
        self._unsent_tokens, self._unsent_logprobs = 0, []
        return [self._first(delta)]

    def _first(self, event: TokenEvent) -> TokenEvent:
        """The event, carrying the prompt's counts if it is the generation's first."""
        if self._sent:
            return event
        self._sent = True
        return dataclasses.replace(
            event, prompt_tokens=self.prompt_tokens, cached_prompt_tokens=self.cached_tokens
        )


def token_logprobs(
    token_ids: Sequence[int],
    positions: Iterable[Mapping[int, Any]],
    k: int,
    token_bytes: TokenBytes,
) -> list[TokenLogprob]:
    """vLLM's logprobs of new tokens (per position: id -> Logprob, the sampled one and the top
    `k`) as ours: each sampled token's log probability and its `k` likeliest alternatives."""
    return [
        _token_logprob(token, position, k, token_bytes)
        for token, position in zip(token_ids, positions, strict=False)
    ]


def _token_logprob(
    token: int, position: Mapping[int, Any], k: int, token_bytes: TokenBytes
) -> TokenLogprob:
    ranked = sorted(
        (entry.rank, tid, entry.logprob)
        for tid, entry in position.items()
        if entry.rank is not None and entry.rank <= k and entry.logprob > -math.inf
    )
    sampled = position.get(token)
    data = token_bytes(token)
    return TokenLogprob(
        data.decode("utf-8", "replace"),
        _clamp(sampled.logprob if sampled is not None else LOGPROB_FLOOR),
        data,
        tuple(_top(tid, logprob, token_bytes) for _, tid, logprob in ranked[:k]),
    )


def _top(token: int, logprob: float, token_bytes: TokenBytes) -> TopLogprob:
    data = token_bytes(token)
    return TopLogprob(data.decode("utf-8", "replace"), _clamp(logprob), data)


def _clamp(logprob: float) -> float:
    """A log probability in [LOGPROB_FLOOR, 0]: JSON has no -inf, and rounding may pass 0."""
    return min(0.0, max(LOGPROB_FLOOR, logprob))


def _plus(event: TokenEvent, tokens: int) -> TokenEvent:
    """The event with `tokens` more tokens."""
    return dataclasses.replace(event, tokens=event.tokens + tokens) if tokens else event
