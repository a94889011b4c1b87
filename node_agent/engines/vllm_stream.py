"""One request's side of the vLLM engine: vLLM's text deltas in, our Deltas and Usage out.

vLLM detokenizes and applies stop strings itself, and may hold text back while a stop string
could still be forming; tokens that came without text ride on the next Delta that has some.
"""

from __future__ import annotations

import time

from node_agent.types import Delta, Finished, Usage


class Tally:
    """Token counts and timings of one request, and the Deltas they make."""

    def __init__(self, *, prompt_tokens: int, submitted_at: float) -> None:
        self.prompt_tokens, self.submitted_at = prompt_tokens, submitted_at
        self.cached_tokens = 0
        self.completion_tokens = 0
        self.outputs = 0
        self.first_token_at: float | None = None
        self._unsent = 0
        self._sent = False

    def push(self, text: str, tokens: int) -> Delta | None:
        """Take one output of vLLM; the Delta to send, if it released any text."""
        self.outputs += 1
        if tokens and self.first_token_at is None:
            self.first_token_at = time.perf_counter()
        self.completion_tokens += tokens
        self._unsent += tokens
        return self._delta(text) if text else None

    def flush(self) -> list[Delta]:
        """A last, textless Delta for tokens not yet sent (an EOS, a stop string's tokens)."""
        return [self._delta("")] if self._unsent else []

    def finish(self, reason: str) -> Finished:
        """The closing event."""
        return Finished(reason, self.usage())

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
        )

    def _delta(self, text: str) -> Delta:
        """A Delta of `text` and the unsent tokens; the first one carries the prompt counts."""
        prompt, cached = (0, 0) if self._sent else (self.prompt_tokens, self.cached_tokens)
        delta = Delta(text, self._unsent, prompt, cached)
        self._unsent, self._sent = 0, True
        return delta
