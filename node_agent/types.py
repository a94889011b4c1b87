"""Domain records the agent passes between its layers. Protobuf stays at the gRPC edge
(service.py, node_facts.py, wire.py)."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

# The agent protocol (meterless.agent.v1): a minor grows by additions, a new major breaks it.
PROTOCOL_VERSION = "1.0"

# What a model on an agent can serve beyond plain text (ModelInfo.capabilities).
TOOLS = "tools"  # tools rendered by its chat template, calls parsed into ToolCallDelta events
REASONING = "reasoning"  # reasoning split into ReasoningDelta events
CONSTRAINTS = "constraints"  # grammar-constrained decoding (schemas, forced tool calls)
LOGPROBS = "logprobs"
COUNT_TOKENS = "count_tokens"  # the agent answers CountTokens (NodeInfo.capabilities only)
EMBEDDINGS = "embeddings"  # the model answers Embed (on vLLM: only a model loaded to pool)
# What this agent's code can do for a model whose template and engine allow it (NodeInfo).
AGENT_CAPABILITIES = frozenset({TOOLS, REASONING, CONSTRAINTS, LOGPROBS, COUNT_TOKENS, EMBEDDINGS})


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


@dataclass(frozen=True, kw_only=True)
class ToolCall:
    """A call the assistant made: its id, the function's name, its arguments as JSON text."""

    id: str
    name: str
    arguments: str


@dataclass(frozen=True)
class ChatMessage:
    """One turn of a conversation: text, and for an assistant its calls, for a tool its result."""

    role: str  # "system", "user", "assistant" or "tool"
    content: str
    tool_calls: tuple[ToolCall, ...] = ()
    tool_call_id: str = ""  # a "tool" message: the call it answers
    name: str = ""  # a "tool" message: the function's name, where known
    reasoning: str = ""  # an assistant's reasoning, as some clients send it back


@dataclass(frozen=True, kw_only=True)
class Tool:
    """A function the model may call; `parameters` is its arguments' JSON schema as JSON text.

    `grammar` (LARK or REGEX) makes it a freeform tool: one string argument, `input`, that the
    model writes raw inside its call, held to the grammar (engines/grammar.py).
    """

    name: str
    description: str = ""
    parameters: str = '{"type": "object", "properties": {}}'
    strict: bool = False
    grammar: Constraint | None = None


class ToolChoiceMode(Enum):
    """Whether the model must call a tool."""

    AUTO = "auto"
    NONE = "none"
    REQUIRED = "required"
    NAMED = "named"


@dataclass(frozen=True)
class ToolChoice:
    """The request's tool choice; `name` only with NAMED."""

    mode: ToolChoiceMode = ToolChoiceMode.AUTO
    name: str = ""


class ConstraintKind(Enum):
    """What a Constraint's text is."""

    JSON_SCHEMA = "json_schema"
    JSON_OBJECT = "json_object"  # any JSON object; no text
    LARK = "lark"
    REGEX = "regex"


@dataclass(frozen=True)
class Constraint:
    """Output the generation must match, enforced while decoding."""

    kind: ConstraintKind
    text: str = ""  # the schema (JSON text), the grammar or the regex


@dataclass(frozen=True, kw_only=True)
class GenerateRequest:
    """One generation: either raw `text` or chat `messages` (rendered with the chat template)."""

    request_id: str
    model: str
    text: str | None = None
    messages: tuple[ChatMessage, ...] | None = None
    sampling: Sampling = field(default_factory=Sampling)
    tools: tuple[Tool, ...] = ()
    tool_choice: ToolChoice = field(default_factory=ToolChoice)
    parallel_tool_calls: bool = True
    template_options: str = ""  # the chat template's extra variables, a JSON object's text
    constraint: Constraint | None = None
    top_logprobs: int | None = None  # None: no logprobs; else alternatives per token (0-20)

    def needs(self) -> frozenset[str]:
        """The capabilities an agent must have to serve this request (ModelInfo.capabilities)."""
        out = set()
        if self.tools or any(m.tool_calls or m.role == "tool" for m in self.messages or ()):
            out.add(TOOLS)
        if self.constraint is not None or self.tool_choice.mode in _FORCED:
            out.add(CONSTRAINTS)
        if self.top_logprobs is not None:
            out.add(LOGPROBS)
        return frozenset(out)


@dataclass(frozen=True)
class TopLogprob:
    """One of the likeliest tokens at a position."""

    token: str
    logprob: float
    bytes: bytes = b""


@dataclass(frozen=True)
class TokenLogprob:
    """A generated token's log probability, with the likeliest alternatives."""

    token: str
    logprob: float
    bytes: bytes = b""
    top: tuple[TopLogprob, ...] = ()


@dataclass(frozen=True)
class Delta:
    """Newly generated text and the number of tokens it covers.

    The first event of a generation (whichever kind) also carries the prompt's token counts,
    so that a stream that breaks before Finished can still be accounted for.
    """

    text: str
    tokens: int
    prompt_tokens: int = 0
    cached_prompt_tokens: int = 0
    logprobs: tuple[TokenLogprob, ...] = ()


@dataclass(frozen=True)
class ReasoningDelta:
    """Reasoning text, split out of the answer by the model's markers."""

    text: str
    tokens: int
    prompt_tokens: int = 0
    cached_prompt_tokens: int = 0


@dataclass(frozen=True, kw_only=True)
class ToolCallDelta:
    """A fragment of the `index`th tool call: id and name first, then arguments, then done."""

    index: int
    id: str = ""
    name: str = ""
    arguments: str = ""
    done: bool = False
    tokens: int = 0
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
    reasoning_tokens: int = 0


@dataclass(frozen=True, kw_only=True)
class Embeddings:
    """An Embed's answer: one unit-length vector per input, in order, and their tokens."""

    vectors: list[list[float]]
    prompt_tokens: int


@dataclass(frozen=True)
class Finished:
    """The last event of a generation."""

    finish_reason: str  # "stop", "length", "tool_calls" or "cancelled"
    usage: Usage
    stop_sequence: str = ""  # the stop string that ended it, "" when none


TokenEvent = Delta | ReasoningDelta | ToolCallDelta  # what a generation streams before Finished
GenerateEvent = TokenEvent | Finished


@dataclass(frozen=True, kw_only=True)
class ModelInfo:
    """A loaded model as clients see it."""

    name: str
    engine: str
    source: str
    memory_bytes: int
    context_length: int
    capabilities: frozenset[str] = frozenset()  # TOOLS, REASONING, CONSTRAINTS, LOGPROBS


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
    capabilities: frozenset[str] = frozenset()  # as ModelInfo.capabilities
    context_length: int = 0  # as ModelInfo.context_length (0: not said)
    engine: str = ""  # as ModelInfo.engine


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


_FORCED = (ToolChoiceMode.REQUIRED, ToolChoiceMode.NAMED)
