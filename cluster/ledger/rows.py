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
import random
import time
from collections.abc import Callable
from enum import Enum
from typing import Any, NamedTuple

from cluster.gateway.forward import StreamFailed
from cluster.types import NodeId
from node_agent.types import Finished

logger = logging.getLogger(__name__)


class Outcome(Enum):
    """How a request ended."""

    OK = "ok"
    FAILED_OVER = "failed-over"
    CANCELLED = "cancelled"
    ERROR = "error"


Values = tuple[Any, ...]  # a row's values, as UsageRow.values() makes them
NODE_ID = 4  # where a row's node is among its values


class UsageRow(NamedTuple):
    """One request in the ledger, by name. Its fields are in the order of the ledger's columns.

    Gateways make rows as their values directly (Tap.row); this is how the rest reads them.
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
    # The node's own: its receipt of the request to its first token, as it reported when it
    # finished the generation (None unless it did, after a first token). ttft_s - node_ttft_s is
    # what the gateway and the network added to the first token; the rest is the node's queue
    # and prefill.
    node_ttft_s: float | None = None

    def values(self) -> Values:
        """The row as the ledger stores it: a plain tuple, in column order, of values of the
        exact types SQLite binds without an adapter. Batches carry rows this way: a plain tuple
        pickles and unpickles in a tenth of the time of a named one, and the controller inserts
        it as it comes, with no Python call per row."""
        return (*self[:6], int(self.stream), *self[7:12], self.outcome.value, *self[13:])

    @classmethod
    def of(cls, values: Values) -> UsageRow:
        """The row whose values these are (the inverse of `values`)."""
        return cls._make(
            (*values[:6], bool(values[6]), *values[7:12], Outcome(values[12]), *values[13:])
        )


def new_request_id() -> str:
    """A request's id: 24 hex digits, the first 11 the milliseconds since 1970, the rest random.

    Ids made later sort later, so the ledger's unique index on them grows at its end: with
    random ids (uuid4) each row of a batch dirtied a page of its own somewhere in the index,
    and inserting one cost the controller 14 us instead of 3 once the ledger held 100,000
    (bench/ledger_parts.py). 52 random bits in each millisecond keep replicas apart; the ids are
    names, not secrets.
    """
    return f"{time.time_ns() // 1_000_000:011x}{random.getrandbits(52):013x}"


class RequestInfo(NamedTuple):
    """What the gateway knows about a request before forwarding it (a named tuple: one per
    request, and built in half the time of a frozen dataclass)."""

    request_id: str
    model: str
    endpoint: str
    stream: bool
    key_id: str | None = None


class Tap:
    """One request's tally (forward.Tally): the forwarder fills it in, and its end makes the row.

    The row is made as the ledger stores it (UsageRow.values), a plain tuple of strings and
    numbers: the garbage collector stops tracking such a tuple the first time it sees it, while
    rows wait in a replica's buffers for their batch.
    """

    __slots__ = (
        "_at",
        "_clock",
        "_done",
        "_start",
        "attempts",
        "cached",
        "final",
        "first_at",
        "generated",
        "info",
        "node_id",
        "prompt",
    )

    def __init__(
        self,
        info: RequestInfo,
        done: Callable[[Values], None] | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.info = info
        self._done = done
        self._clock = clock  # the forwarder sets first_at from time.monotonic, on this clock
        self._start = clock()
        self._at = wall()
        self.node_id: NodeId | None = None
        self.attempts = 0
        self.first_at: float | None = None
        self.final: Finished | StreamFailed | None = None
        self.prompt = self.cached = self.generated = 0

    def end(self, error: BaseException | None) -> None:
        """The request's events ended (with `error` if one was raised): make its row and hand
        it to `done`, which must never break the request it records."""
        if self._done is not None:
            try:
                self._done(self.row(error))
            except Exception:
                logger.exception("recording request %s failed", self.info.request_id)

    def row(self, error: BaseException | None = None) -> Values:
        """The request's row: its outcome is the node's end if there was one, else an error if
        one was raised, else the client went away."""
        now = self._clock()
        final, first, node_ttft = self.final, self.first_at, None
        if final is None:
            outcome = _ERROR if error is not None else _CANCELLED
            prompt, cached, completion = self.prompt, self.cached, self.generated
        else:
            u = final.usage
            prompt, cached = u.prompt_tokens, u.cached_prompt_tokens
            completion = u.completion_tokens
            if isinstance(final, StreamFailed):
                outcome = _ERROR
            elif final.finish_reason == "cancelled":
                outcome = _CANCELLED
            else:
                outcome = _OK if self.attempts <= 1 else _FAILED_OVER
                node_ttft = u.ttft_seconds if first is not None else None
        i = self.info
        return (  # in the order of UsageRow's fields
            i.request_id,
            self._at,
            i.key_id,
            i.model,
            self.node_id,
            i.endpoint,
            int(i.stream),
            prompt,
            cached,
            completion,
            None if first is None else first - self._start,  # ttft_s
            now - self._start,  # duration_s
            outcome,
            self.attempts,
            node_ttft,
        )


_OK, _FAILED_OVER, _CANCELLED, _ERROR = (o.value for o in Outcome)
