"""One ledger row per request, taken from the forwarder's events as they pass through the gateway.

Outcomes (what `UsageRow.outcome` says):

- `ok`: the node finished the generation (stop or length) on the first node tried;
- `failed-over`: it finished, but only on a later node, after earlier ones failed before the
  first token (`attempts` says how many were tried);
- `cancelled`: the client went away before the end (the node stopped generating);
- `error`: the request was valid but not served to the end: no node could take it (404, 503,
  504), the node rejected it (a 400 such as a prompt too long), or the node failed mid-stream.

Requests the gateway rejects before routing (malformed JSON, bad parameters) are not recorded:
no node did any work and no model was chosen. Token counts are the node's own: those of the
usage the response reported when it finished, or what had been generated when it stopped.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from enum import Enum
from typing import Any, NamedTuple

from cluster.forward import ForwardEvent, Routed, StreamFailed
from node_agent.types import Delta, Finished

logger = logging.getLogger(__name__)


class Outcome(Enum):
    """How a request ended."""

    OK = "ok"
    FAILED_OVER = "failed-over"
    CANCELLED = "cancelled"
    ERROR = "error"


Values = tuple[Any, ...]  # a row's values, as UsageRow.values() makes them


class UsageRow(NamedTuple):
    """One request in the ledger.

    A named tuple, not a frozen dataclass: a gateway makes one per request, and it is built in
    half the time. Its fields are in the order of the ledger's columns.
    """

    request_id: str
    at: float  # unix seconds when the gateway received it
    key_id: str | None
    model: str
    node_id: str | None  # the node that served it (the last one tried); None if none did
    endpoint: str  # "chat" or "completions"
    stream: bool
    prompt_tokens: int = 0
    cached_prompt_tokens: int = 0
    completion_tokens: int = 0
    ttft_s: float | None = None  # gateway receipt to the first token; None without one
    duration_s: float = 0.0
    outcome: Outcome = Outcome.OK
    attempts: int = 0

    def values(self) -> Values:
        """The row as the ledger stores it: a plain tuple, in column order, of values of the
        exact types SQLite binds without an adapter. Batches carry rows this way: a plain tuple
        pickles and unpickles in a tenth of the time of a named one, and the controller inserts
        it as it comes, with no Python call per row."""
        return (*self[:6], int(self.stream), *self[7:12], self.outcome.value, self.attempts)


class RequestInfo(NamedTuple):
    """What the gateway knows about a request before forwarding it (a named tuple, as UsageRow:
    one per request, and cheaper to build than a frozen dataclass)."""

    request_id: str
    model: str
    endpoint: str
    stream: bool
    key_id: str | None = None


class Tap:
    """Watches one request's events and makes its row when the request ends."""

    __slots__ = ("_at", "_attempts", "_cached", "_clock", "_completion", "_done", "_first",
                 "_node", "_outcome", "_prompt", "_start", "info")

    def __init__(
        self,
        info: RequestInfo,
        done: Callable[[UsageRow], None] | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.info = info
        self._done = done
        self._clock = clock
        self._start = clock()
        self._at = wall()
        self._node: str | None = None
        self._attempts = 0
        self._first: float | None = None
        self._prompt = self._cached = self._completion = 0
        self._outcome: Outcome | None = None

    def observe(self, event: ForwardEvent) -> None:
        """Take one forwarder event into account."""
        if isinstance(event, Delta):  # by far the most frequent: first
            if self._first is None:
                self._first = self._clock()
                self._prompt, self._cached = event.prompt_tokens, event.cached_prompt_tokens
            self._completion += event.tokens
        elif isinstance(event, Routed):
            self._node, self._attempts = event.node_id, event.attempts
        elif isinstance(event, Finished):
            u = event.usage
            self._prompt, self._cached = u.prompt_tokens, u.cached_prompt_tokens
            self._completion = u.completion_tokens
            if event.finish_reason == "cancelled":
                self._outcome = Outcome.CANCELLED
            else:
                self._outcome = Outcome.OK if self._attempts <= 1 else Outcome.FAILED_OVER
        elif isinstance(event, StreamFailed):
            u = event.usage
            self._prompt, self._cached = u.prompt_tokens, u.cached_prompt_tokens
            self._completion = u.completion_tokens
            self._outcome = Outcome.ERROR

    def failed(self) -> None:
        """The request ended in an error (raised before or while streaming)."""
        self._outcome = self._outcome or Outcome.ERROR

    def end(self, error: BaseException | None) -> None:
        """The request's events ended (with `error` if one was raised): make its row and hand
        it to `done`, which must never break the request it records."""
        if error is not None:
            self.failed()
        if self._done is not None:
            try:
                self._done(self.row())
            except Exception:
                logger.exception("recording request %s failed", self.info.request_id)

    def row(self) -> UsageRow:
        """The request's row; an end without an outcome means the client went away."""
        now = self._clock()
        i = self.info
        return UsageRow(  # by position, in the order of UsageRow's fields: half the time
            i.request_id,
            self._at,
            i.key_id,
            i.model,
            self._node,
            i.endpoint,
            i.stream,
            self._prompt,
            self._cached,
            self._completion,
            None if self._first is None else self._first - self._start,  # ttft_s
            now - self._start,  # duration_s
            self._outcome or Outcome.CANCELLED,
            self._attempts,
        )
