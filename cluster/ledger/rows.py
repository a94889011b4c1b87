"""The ledger's row schema: one row per request, and the batches gateways send them in.

The gateway makes each row from the forwarder's events (cluster/gateway/tally.py).

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

import random
import time
from dataclasses import dataclass
from enum import Enum
from typing import Any, NamedTuple


class Outcome(Enum):
    """How a request ended."""

    OK = "ok"
    FAILED_OVER = "failed-over"
    CANCELLED = "cancelled"
    ERROR = "error"


Values = tuple[Any, ...]  # a row's values, as UsageRow.values() makes them
# The model of a request for a name no node serves: whatever a client makes up is one series in
# /metrics and one group in `cluster usage`, not one of each.
UNKNOWN_MODEL = "<unknown>"
NODE_ID = 4  # where a row's node is among its values
RENTED_PREFIX = "provider:"  # the node id of a request a provider served: provider:<name>


class UsageRow(NamedTuple):
    """One request in the ledger, by name. Its fields are in the order of the ledger's columns.

    Gateways make rows as their values directly (Tap.row); this is how the rest reads them.
    """

    request_id: str
    at: float  # unix seconds when the gateway received it
    key_id: str | None
    model: str
    node_id: str | None  # the node that served it (the last one tried); None if none did
    endpoint: str  # "chat", "completions", "messages" (Anthropic), "responses", "embeddings"
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
    # What the request used, comma-separated and sorted: "constrained" (a grammar held the
    # output: a schema, or a forced or strict tool call), "reasoning" (the node returned some),
    # "tools" (it offered tools). Which workloads are agents, for `cluster usage`.
    features: str = ""
    # The name the client asked for, where an alias made it another model (`model` is the one
    # served); None when it asked for the model by its own name, and in rows from before aliases.
    requested_model: str | None = None
    # The family of the program that sent it (gateway/client_family.py: claude-code, codex,
    # openai-python, ...); None in rows from before it was recorded.
    client: str | None = None

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

    Ids made later sort later, so the ledger's unique index on them grows at its end (random
    ids made each insert several times dearer once the ledger was large). 52 random bits in
    each millisecond keep replicas apart; the ids are names, not secrets.
    """
    return f"{time.time_ns() // 1_000_000:011x}{random.getrandbits(52):013x}"


@dataclass(frozen=True, kw_only=True)
class UsageBatch:
    """Rows from one gateway replica, with its state when it sent them.

    The rows travel as their values (UsageRow.values): unpickling a named tuple costs the
    controller a Python call per row, a plain tuple none. A replica makes them that way (Tap.row).
    """

    replica: str
    rows: tuple[Values, ...]
    inflight: int  # requests still running on the replica
    pending: int  # rows still buffered after this batch
    closing: bool  # the replica has seen the shutdown and refuses new requests
    dropped: int = 0  # rows the replica gave up, ever: its buffer was full (a long outage)


@dataclass(frozen=True, kw_only=True)
class UsageAck:
    """The controller's answer: rows committed, and whether the cluster is shutting down.

    `stored` is False when the ledger could not write (a full disk, say): the replica keeps the
    batch's rows and sends them again (cluster/ledger/outage.py)."""

    written: int
    closing: bool = False
    stored: bool = True
