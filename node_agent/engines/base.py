"""The one protocol every engine implements; the service and tests depend on nothing else.

Cancellation: `generate` is an async generator. A caller that stops iterating (closes it, or is
cancelled while awaiting it) cancels the generation; the engine frees the request's slot within
one decode step.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from node_agent.types import GenerateEvent, GenerateRequest, ModelInfo, ModelStatus


@dataclass(frozen=True, kw_only=True)
class LoadSpec:
    """What to load: a resolved local directory, the name to serve it under, and engine knobs."""

    name: str
    source: str
    path: Path
    context_length: int = 0  # 0: the model's own
    options: dict[str, str] = field(default_factory=dict)


class Engine(Protocol):
    """An inference engine holding zero or more loaded models."""

    name: str

    async def load(self, spec: LoadSpec) -> ModelInfo:
        """Load a model; raises OutOfMemory, LoadFailed or InvalidRequest."""
        ...

    async def unload(self, name: str) -> None:
        """Unload a model, cancelling its requests; raises ModelNotLoaded."""
        ...

    def models(self) -> list[ModelInfo]:
        """The models loaded now."""
        ...

    def status(self) -> list[ModelStatus]:
        """Live counters per loaded model."""
        ...

    def generate(self, request: GenerateRequest) -> AsyncIterator[GenerateEvent]:
        """Stream Deltas then one Finished; raises ModelNotLoaded, InvalidRequest, PromptTooLong."""
        ...

    async def count_tokens(self, request: GenerateRequest) -> int:
        """The prompt's length in tokens, rendered as `generate` renders it; ModelNotLoaded."""
        ...

    async def embed(self, model: str, inputs: Sequence[str]) -> tuple[list[list[float]], int]:
        """One unit-length vector per input, in order, and the tokens they took together;
        ModelNotLoaded, InvalidRequest (the model does not embed), PromptTooLong."""
        ...

    async def close(self) -> None:
        """Stop the engine's worker and free every model."""
        ...
