"""One loaded MLX model on the worker thread: its continuous batch, prompt cache and counters.

Requests join the model's one BatchGenerator between decode steps. A finished request's KV cache
is kept in an LRU prompt cache keyed by prompt + generated tokens, so the next turn of the same
conversation prefills only what is new.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import mlx.core as mx
from mlx.utils import tree_flatten
from mlx_lm.generate import BatchGenerator
from mlx_lm.models.cache import LRUPromptCache, can_trim_prompt_cache, trim_prompt_cache

from node_agent.engines.common import check_prompt_length, render_prompt
from node_agent.engines.mlx_grammar import Grammars
from node_agent.engines.mlx_stream import (
    IncrementalDecoder,
    RequestStream,
    Sink,
    make_sampler,
    token_logprob,
)
from node_agent.engines.parsing import Dialect, OutputParser, starts_in_reasoning
from node_agent.errors import AgentError
from node_agent.types import GenerateRequest, ModelInfo, ModelStatus, TokenLogprob

MEMORY_REFRESH_STEPS = 16  # how often the KV byte count in status is refreshed while decoding
PROMPT_TAIL = 16  # tokens of the prompt that tell whether it opens a think block

LogitsProcessor = Callable[[mx.array, mx.array], mx.array]


@dataclass(frozen=True, kw_only=True)
class BatchLimits:
    """How much one model batches and caches."""

    max_batch: int = 32
    prefill_batch: int = 8
    # Prompt tokens per prefill chunk: running streams wait for a whole chunk, and so does a
    # cancel, so keep it short of mlx-lm's 2048.
    prefill_step: int = 512
    cache_entries: int = 32
    cache_bytes: int = 1 << 30
    # Seconds at least between decode steps; > 0 makes the node slower on purpose.
    step_interval_s: float = 0.0


def weights_bytes(model: Any) -> int:
    """Bytes held by a model's parameters."""
    flat: list[tuple[str, Any]] = tree_flatten(model.parameters())  # type: ignore[assignment]
    return sum(int(v.nbytes) for _, v in flat)


@dataclass
class Counters:
    """A model's running totals; only the worker writes them, status readers only read."""

    generated_tokens: int = 0
    prompt_tokens: int = 0
    cached_prompt_tokens: int = 0
    prompt_cache_hits: int = 0
    requests_finished: int = 0
    busy_seconds: float = 0.0
    kv_bytes: int = 0


class ModelSlot:
    """One loaded model with its batch, its prompt cache, its running streams and counters."""

    def __init__(
        self,
        *,
        info: ModelInfo,
        model: Any,
        tokenizer: Any,
        limits: BatchLimits,
        dialect: Dialect | None = None,
        grammars: Grammars | None = None,
    ):
        self.info, self.model, self.tokenizer = info, model, tokenizer
        self.dialect = dialect or Dialect()
        self.grammars = grammars  # None: this model cannot be constrained
        self.prompt_cache = LRUPromptCache(limits.cache_entries, limits.cache_bytes)
        self._limits = limits
        self.batch: Any = self._new_batch()  # mlx-lm is untyped
        self.streams: dict[int, RequestStream] = {}  # by the batch's uid
        self.uids: dict[int, int] = {}  # ticket -> uid
        self.counters = Counters()
        self.busy_since: float | None = None
        self.steps = 0

    def submit(
        self,
        ticket: int,
        request: GenerateRequest,
        sink: Sink,
        submitted_at: float,
        seed: int,
        processor: LogitsProcessor | None = None,
        rendered: tuple[Any, list[int]] | None = None,
    ) -> None:
        """Render and check the prompt, reuse the longest cached prefix, and join the batch.

        `processor`: the request's compiled grammar, if it has one; it masks this row only.
        `rendered`: the prompt's tokens and the tokenizer that made them, off this thread (which
        decodes every stream); used only if that is this model's tokenizer.
        """
        if rendered is not None and rendered[0] is self.tokenizer:
            tokens = rendered[1]
        else:
            tokens = render_prompt(self.tokenizer, request, constrained=processor is not None)
        check_prompt_length(len(tokens), self.info.context_length)
        cache, rest = self._cached_prefix(tokens)
        cached = len(tokens) - len(rest)
        room = self.info.context_length - len(tokens)
        (uid,) = self.batch.insert(
            [rest],
            max_tokens=[min(request.sampling.max_tokens, room)],
            caches=[cache],  # None: the batch makes a fresh one
            all_tokens=[tokens[:cached]],
            samplers=[make_sampler(request.sampling, seed)],
            logits_processors=[[processor] if processor else []],
        )
        stream = RequestStream(
            ticket=ticket,
            sink=sink,
            decoder=IncrementalDecoder(self.tokenizer.decode),
            sampling=request.sampling,
            prompt_tokens=len(tokens),
            cached_tokens=cached,
            submitted_at=submitted_at,
            parser=self._parser(request, tokens),
            top_logprobs=request.top_logprobs,
        )
        self._add(uid, stream)

    def step(self) -> None:
        """One decode step for every running request (and prefill for those joining)."""
        _, responses = self.batch.next()
        # First tokens first: every later hop (this node's event loop, the gateway, the client)
        # takes a step's tokens in the order they are pushed, and mlx-lm lists the rows that
        # just joined last, so their first tokens waited behind the whole batch's at each hop.
        # A running stream's next token now waits behind a few first tokens, in a step of tens
        # of ms. (At 32 streams this took the gateway's added p99 TTFT, outside the node, from
        # +6.3 to +0.8 ms: bench/gateway.py.)
        streams = self.streams
        responses = sorted(responses, key=lambda r: streams[r.uid].first_token_at is not None)
        stopped = []
        for r in responses:
            stream, eos = self.streams[r.uid], r.finish_reason == "stop"
            stream.push(r.token, eos=eos, logprob=self._logprob(stream, r, eos))
            self.counters.generated_tokens += 1
            if r.finish_reason is not None:
                self._retire(r.uid, r.finish_reason, r.prompt_cache, r.all_tokens)
            elif stream.stopped:
                stopped.append(r.uid)
        if stopped:  # a stop string the batch knows nothing of: take the rows out ourselves
            caches = self.batch.remove(stopped, return_prompt_caches=True)
            for uid in stopped:
                self._retire(uid, "stop", *caches.get(uid, (None, None)))
        self._tick()

    def cancel(self, ticket: int) -> bool:
        """Drop a request from the batch and end its stream; False if it is not here."""
        uid = self.uids.get(ticket)
        if uid is None:
            return False
        self.batch.remove([uid])
        self._pop(uid).finish("cancelled")
        self._tick()
        return True

    def fail(self, error: AgentError) -> None:
        """End every stream with `error` and start a fresh batch; the old one's state is suspect."""
        for uid in list(self.streams):
            self._pop(uid).sink.put(error)
        self.batch.close()
        self.batch = self._new_batch()
        self._tick()

    def close(self) -> None:
        """Cancel every request and release the batch."""
        for uid in list(self.streams):
            self._pop(uid).finish("cancelled")
        mx.synchronize(self.batch.stream)  # no evaluation may outlive the model it runs on
        self.batch.close()
        self._tick()

    def status(self) -> ModelStatus:
        """A snapshot of the counters; safe to call from any thread."""
        streams, c, since = list(self.streams.values()), self.counters, self.busy_since
        running = sum(1 for s in streams if s.first_token_at is not None)
        return ModelStatus(
            model=self.info.name,
            running=running,
            waiting=len(streams) - running,
            generated_tokens=c.generated_tokens,
            prompt_tokens=c.prompt_tokens,
            cached_prompt_tokens=c.cached_prompt_tokens,
            prompt_cache_hits=c.prompt_cache_hits,
            requests_finished=c.requests_finished,
            memory_bytes=self.info.memory_bytes + c.kv_bytes,
            busy_seconds=c.busy_seconds + (time.perf_counter() - since if since else 0.0),
        )

    def _parser(self, request: GenerateRequest, prompt: list[int]) -> OutputParser:
        """The request's output parser: chat in the model's dialect, raw text as plain text."""
        if request.messages is None:
            return OutputParser(Dialect())
        tail = self.tokenizer.decode(prompt[-PROMPT_TAIL:])
        reasoning = starts_in_reasoning(self.dialect, tail)
        return OutputParser(self.dialect, tools=request.tools, reasoning=reasoning)

    def _logprob(self, stream: RequestStream, r: Any, eos: bool) -> TokenLogprob | None:
        """The token's logprobs if the request asked for them (none for the closing EOS)."""
        if stream.top_logprobs is None or eos:
            return None
        return token_logprob(r.logprobs, r.token, stream.top_logprobs, self._token_bytes)

    def _token_bytes(self, token: int) -> bytes:
        """A token's bytes, exactly where llguidance knows them."""
        if self.grammars is not None:
            return self.grammars.token_bytes(token)
        return str(self.tokenizer.decode([token])).encode()

    def _new_batch(self) -> Any:
        """A continuous batch that stops rows on the tokenizer's EOS tokens."""
        return BatchGenerator(
            self.model,
            stop_tokens=[[t] for t in self.tokenizer.eos_token_ids],
            completion_batch_size=self._limits.max_batch,
            prefill_batch_size=min(self._limits.prefill_batch, self._limits.max_batch),
            prefill_step_size=self._limits.prefill_step,
        )

    def _cached_prefix(self, tokens: list[int]) -> tuple[list[Any] | None, list[int]]:
        """The KV cache of the longest cached prefix and the tokens still to prefill."""
        cache, rest = self.prompt_cache.fetch_nearest_cache(self.info.name, tokens)
        if cache is not None and not rest:
            # An exact hit still needs the last token run through the model for its logits.
            if not can_trim_prompt_cache(cache):
                return None, tokens
            trim_prompt_cache(cache, 1)
            rest = tokens[-1:]
        return cache, rest

    def _add(self, uid: int, stream: RequestStream) -> None:
        """Track a stream that the batch now holds under `uid`."""
        self.streams[uid], self.uids[stream.ticket] = stream, uid
        c = self.counters
        c.prompt_tokens += stream.prompt_tokens
        c.cached_prompt_tokens += stream.cached_tokens
        c.prompt_cache_hits += 1 if stream.cached_tokens else 0
        if self.busy_since is None:
            self.busy_since = time.perf_counter()

    def _pop(self, uid: int) -> RequestStream:
        """Forget a stream and count it as finished."""
        stream = self.streams.pop(uid)
        del self.uids[stream.ticket]
        self.counters.requests_finished += 1
        return stream

    def _retire(self, uid: int, reason: str, cache: Any, tokens: list[int] | None) -> None:
        """End a stream and keep its KV cache for the conversation's next turn."""
        if cache is not None and tokens:
            self.prompt_cache.insert_cache(self.info.name, list(tokens), cache)
        self._pop(uid).finish(reason)

    def _tick(self) -> None:
        """Add the time since the last tick to busy_seconds if anything was running."""
        now = time.perf_counter()
        if self.busy_since is not None:
            self.counters.busy_seconds += now - self.busy_since
        self.busy_since = now if self.streams else None
        self.steps += 1
        if not self.streams or self.steps % MEMORY_REFRESH_STEPS == 0:
            self.counters.kv_bytes = self.batch.prompt_cache_nbytes + self.prompt_cache.nbytes
