"""The bounds every dialect's request schema puts on what a client may send.

A number past what the agent's wire carries (max_tokens is a uint32 there, seed an int64) would
fail inside the forwarder, a 500 with a traceback; a string of any length would reach the ledger,
the metrics' labels and the node's stop scanner. Each is refused when the body is parsed instead,
a 400 naming the parameter. A budget under the bound but past the model's context is still
capped by the node, as before.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

MAX_MODEL_NAME = 256  # characters; longer than any hub id or alias
MAX_STOP_CHARS = 256  # characters in one stop string
MAX_STOPS = 4  # stop strings in one request: what every node accepts (node_agent/engines/common.py)
MAX_TOKEN_COUNT = 2**32 - 1  # the wire's uint32

RequestedModel = Annotated[str, Field(min_length=1, max_length=MAX_MODEL_NAME)]
TokenCount = Annotated[int, Field(ge=1, le=MAX_TOKEN_COUNT)]
Seed = Annotated[int, Field(ge=-(2**63), le=2**63 - 1)]
StopText = Annotated[str, Field(max_length=MAX_STOP_CHARS)]
