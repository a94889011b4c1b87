"""Domain records the agent passes between its layers. Protobuf stays at the gRPC edge
(service.py, node_facts.py, wire.py)."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum


@dataclass(frozen=True, kw_only=True)
class CostProfile:
    """What owning a node costs: its price, how long it is written off over, and its power."""

    price_usd: float = 0.0
    amortize_months: float = 36.0
    idle_watts: float = 0.0
    busy_watts: float = 0.0
    kwh_usd: float = 0.0


@dataclass(frozen=True, kw_only=True)
class Hardware:
    """Facts about the machine: accelerator, memory, and power where it can be read."""

    accelerator_kind: str  # "apple", "nvidia" or "cpu"
    accelerator_name: str
    accelerator_count: int
    accelerator_memory_bytes: int
    memory_total_bytes: int
    memory_available_bytes: int
    os: str
    arch: str


@dataclass(frozen=True, kw_only=True)
class Sampling:
    """Sampling knobs for one request; validated by the engine."""

    max_tokens: int = 256
    temperature: float = 1.0
    top_p: float = 1.0
    stop: tuple[str, ...] = ()
    seed: int | None = None


@dataclass(frozen=True)
class ChatMessage:
    """One turn of a conversation."""

    role: str
    content: str


@dataclass(frozen=True, kw_only=True)
class GenerateRequest:
    """One generation: either raw `text` or chat `messages` (rendered with the chat template)."""

    request_id: str
    model: str
    text: str | None = None
    messages: tuple[ChatMessage, ...] | None = None
    sampling: Sampling = field(default_factory=Sampling)


@dataclass(frozen=True)
class Delta:
    """Newly generated text and the number of tokens it covers.

    The first Delta of a generation also carries the prompt's token counts, so that a stream
    that breaks before Finished can still be accounted for.
    """

    text: str
    tokens: int
    prompt_tokens: int = 0
    cached_prompt_tokens: int = 0


@dataclass(frozen=True, kw_only=True)
class Usage:
    """Token counts and timings of one finished generation."""

    prompt_tokens: int
    completion_tokens: int
    cached_prompt_tokens: int
    ttft_seconds: float
    decode_tokens_per_second: float
    duration_seconds: float


@dataclass(frozen=True)
class Finished:
    """The last event of a generation."""

    finish_reason: str  # "stop", "length" or "cancelled"
    usage: Usage


GenerateEvent = Delta | Finished


@dataclass(frozen=True, kw_only=True)
class ModelInfo:
    """A loaded model as clients see it."""

    name: str
    engine: str
    source: str
    memory_bytes: int
    context_length: int


@dataclass(frozen=True, kw_only=True)
class DiskModel:
    """A model kept on a node's disk, with the sizes placement needs before loading it."""

    source: str
    weights_bytes: int
    kv_bytes_per_token: int
    context_length: int


@dataclass(frozen=True, kw_only=True)
class ModelStatus:
    """Live counters of one loaded model; the token counters only ever grow."""

    model: str
    running: int
    waiting: int
    generated_tokens: int
    prompt_tokens: int
    cached_prompt_tokens: int
    prompt_cache_hits: int
    requests_finished: int
    memory_bytes: int
    busy_seconds: float
    kv_cache_usage: float = 0.0  # share of a fixed KV-cache pool in use; 0 without one


class LoadStage(Enum):
    """Where a model load stands."""

    RESOLVING = "resolving"
    DOWNLOADING = "downloading"
    LOADING = "loading"
    READY = "ready"
    FAILED = "failed"


@dataclass(frozen=True, kw_only=True)
class LoadProgress:
    """One step of a model load; `model` is set when READY."""

    stage: LoadStage
    message: str = ""
    bytes_done: int = 0
    bytes_total: int = 0
    model: ModelInfo | None = None
