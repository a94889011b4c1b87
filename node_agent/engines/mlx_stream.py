"""One request's side of the MLX engine: its sampler, text stream, events, logprobs and usage.

Everything here runs on the engine's worker thread except `Sink.put`'s far end, which lands on
the caller's event loop.
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
import time
from collections.abc import Callable
from typing import Any

import mlx.core as mx
from mlx_lm.sample_utils import apply_top_p, greedy_sampler

from node_agent.engines.parsing import Dialect, OutputParser
from node_agent.errors import AgentError
from node_agent.stops import StopFilter
from node_agent.types import (
    Delta,
    Finished,
    GenerateEvent,
    Sampling,
    TokenEvent,
    TokenLogprob,
    TopLogprob,
    Usage,
)

Sampler = Callable[[mx.array], mx.array]
MAX_HELD = 8  # tokens; a UTF-8 character has at most 4 bytes, so this is generous


def make_sampler(sampling: Sampling, seed: int) -> Sampler:
    """A sampler with its own PRNG key, so a seeded request repeats whatever shares its batch."""
    if sampling.temperature == 0:
        return greedy_sampler  # shared, so a batch of greedy requests samples in one call
    key = mx.random.key(seed)
    scale, top_p = 1.0 / sampling.temperature, sampling.top_p

    def sample(logprobs: mx.array) -> mx.array:
        nonlocal key
        key, step = mx.random.split(key)
        if top_p < 1.0:
            logprobs = apply_top_p(logprobs, top_p)
        return mx.random.categorical(logprobs * scale, key=step)

    return sample


class Sink:
    """Hands one request's events from the worker thread to its asyncio queue."""

    def __init__(self, loop: asyncio.AbstractEventLoop, queue: asyncio.Queue[Any]) -> None:
        self._loop, self._queue = loop, queue

    def put(self, event: GenerateEvent | AgentError) -> None:
        """Deliver an event or an error; dropped if the caller's loop has already closed."""
        try:
            self._loop.call_soon_threadsafe(self._queue.put_nowait, event)
        except RuntimeError:
            pass


class IncrementalDecoder:
    """Token ids in, text out, holding back tokens that end inside a multi-byte character.

    Decodes a short window (the last emitted piece plus new tokens) and emits the difference, so
    leading spaces and merges come out exactly as `tokenizer.decode` would render them.
    """

    def __init__(self, decode: Callable[[list[int]], str]) -> None:
        self._decode = decode
        self._tokens: list[int] = []
        self._prefix = self._read = 0

    def add(self, token: int) -> str:
        """Take one token; return the text it completes (possibly empty)."""
        self._tokens.append(token)
        return self._advance(final=False)

    def flush(self) -> str:
        """Whatever is still held back, replacement characters and all."""
        return self._advance(final=True)

    def _advance(self, *, final: bool) -> str:
        """Emit the decoded text past the last read point, once it is complete."""
        before = self._decode(self._tokens[self._prefix : self._read])
        after = self._decode(self._tokens[self._prefix :])
        incomplete = len(after) <= len(before) or after.endswith("\ufffd")
        # No character spans MAX_HELD tokens: past that the bytes are invalid (or the tokens
        # decode to nothing), and holding on would only grow the window decoded every step.
        if incomplete and not final and len(self._tokens) - self._read < MAX_HELD:
            return ""
        self._prefix, self._read = self._read, len(self._tokens)
        return after[len(before) :]


class RequestStream:
    """The worker's record of one running request: its parser, stop strings, and timings.

    Tokens go through the incremental decoder, then the output parser (reasoning, answer, tool
    calls); stop strings and logprobs apply to the answer's Deltas only.
    """

    def __init__(
        self,
        *,
        ticket: int,
        sink: Sink,
        decoder: IncrementalDecoder,
        sampling: Sampling,
        prompt_tokens: int,
        cached_tokens: int,
        submitted_at: float,
        parser: OutputParser | None = None,
        top_logprobs: int | None = None,
    ) -> None:
        self.ticket, self.sink = ticket, sink
        self.prompt_tokens, self.cached_tokens = prompt_tokens, cached_tokens
        self.top_logprobs = top_logprobs
        self.completion_tokens = 0
        self.submitted_at = submitted_at
        self.first_token_at: float | None = None
        self._decoder = decoder
        self._parser = parser or OutputParser(Dialect())
        self._stops = StopFilter(sampling.stop)
        self._logprobs: list[TokenLogprob] = []  # of tokens fed, not yet carried by an event
        self._unsent_tokens = 0  # answer tokens whose text the stop filter still holds
        self._unsent_logprobs: list[TokenLogprob] = []
        self._sent = False

    @property
    def stopped(self) -> bool:
        """Whether a stop string has appeared in the answer."""
        return self._stops.stopped

    def push(self, token: int, *, eos: bool, logprob: TokenLogprob | None = None) -> None:
        """Count one generated token and send the events it releases; EOS adds no text."""
        if self.first_token_at is None:
            self.first_token_at = time.perf_counter()
        self.completion_tokens += 1
        if logprob is not None:
            self._logprobs.append(logprob)
        self._send(self._parser.feed("" if eos else self._decoder.add(token)))

    def finish(self, reason: str) -> None:
        """Flush held text and any unsent token count, then send Finished."""
        if reason != "cancelled":
            self._send(self._parser.feed(self._decoder.flush(), 0) + self._parser.finish())
            self._release(self._stops.flush())
            if self._parser.made_calls:
                reason = "tool_calls"
            elif self._stops.stopped:
                reason = "stop"
        matched = self._stops.matched if reason == "stop" else ""
        self.sink.put(Finished(reason, self.usage(), matched))

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

    def _send(self, events: list[TokenEvent]) -> None:
        """Send the parser's events: answer text through the stop filter, the rest as is."""
        for event in events:
            logprobs, self._logprobs = (
                self._logprobs[: event.tokens],
                self._logprobs[event.tokens :],
            )
            if self._stops.stopped:  # past a stop string nothing more is said; tokens still count
                self._unsent_tokens += event.tokens
            elif isinstance(event, Delta):
                self._unsent_tokens += event.tokens
                self._unsent_logprobs += logprobs
                self._release(self._stops.feed(event.text), force=False)
            else:  # answer text held for a stop string goes out before a call or reasoning
                self._release(self._stops.flush(), force=False)
                self._put(dataclasses.replace(event, tokens=event.tokens + self._unsent_tokens))
                self._unsent_tokens, self._unsent_logprobs = 0, []  # they went with this event

    def _release(self, text: str, *, force: bool = True) -> None:
        """Send answer text with its unsent tokens; `force` sends a bare count too."""
        if text or (force and self._unsent_tokens):
            logprobs = tuple(self._unsent_logprobs)
            self._put(Delta(text, self._unsent_tokens, logprobs=logprobs))
            self._unsent_tokens, self._unsent_logprobs = 0, []

    def _put(self, event: TokenEvent) -> None:
        """Hand an event to the sink; the first one carries the prompt's counts."""
        if not self._sent:
            event = dataclasses.replace(
                event, prompt_tokens=self.prompt_tokens, cached_prompt_tokens=self.cached_tokens
            )
            self._sent = True
        self.sink.put(event)


def token_logprob(
    row: mx.array, token: int, k: int, token_bytes: Callable[[int], bytes]
) -> TokenLogprob:
    """The sampled token's log probability and the `k` likeliest tokens, from a step's row."""
    picked = mx.array([token], dtype=mx.uint32)
    if k:
        picked = mx.concatenate([picked, mx.argpartition(-row, kth=k - 1)[:k].astype(mx.uint32)])
    ids: list[int] = picked.tolist()  # type: ignore[assignment]
    values: list[float] = row[picked].tolist()  # type: ignore[assignment]
    top = sorted(zip(ids[1:], values[1:], strict=True), key=lambda p: -p[1])
    data = token_bytes(token)
    return TokenLogprob(
        data.decode("utf-8", "replace"),
        min(0.0, values[0]),
        data,
        tuple(_top(i, v, token_bytes) for i, v in top if v > -math.inf),
    )


def _top(token: int, logprob: float, token_bytes: Callable[[int], bytes]) -> TopLogprob:
    data = token_bytes(token)
    return TopLogprob(data.decode("utf-8", "replace"), min(0.0, logprob), data)
