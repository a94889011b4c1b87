"""The order of one decode step's events: first tokens go out before running streams' next ones.

The batch is a stand-in that returns scripted responses (mlx-lm's BatchGenerator is tested with
the real model in tests/integration/test_engine_contract.py); what is tested is how the slot
hands a step's tokens to the requests' sinks.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import pytest

from node_agent.engines.mlx_slot import BatchLimits, ModelSlot
from node_agent.engines.mlx_stream import IncrementalDecoder, RequestStream
from node_agent.types import Delta, GenerateRequest, ModelInfo, Sampling


class Response(NamedTuple):
    """One row of a step, as BatchGenerator.next returns it."""

    uid: int
    token: int
    finish_reason: str | None = None
    prompt_cache: Any = None
    all_tokens: Any = None


class ScriptedBatch:
    """Returns one scripted list of responses per step."""

    prompt_cache_nbytes = 0

    def __init__(self) -> None:
        self.steps: list[list[Response]] = []

    def next(self) -> tuple[list[Any], list[Response]]:
        return [], self.steps.pop(0)


class Tokenizer:
    eos_token_ids = (0,)

    def decode(self, ids: list[int]) -> str:
        return "".join(chr(ord("a") + i) for i in ids)


class Sink:
    """One request's sink, writing (ticket, event) into a list that every sink shares."""

    def __init__(self, ticket: int, events: list[tuple[int, Any]]) -> None:
        self.ticket, self.events = ticket, events

    def put(self, event: Any) -> None:
        self.events.append((self.ticket, event))


@pytest.fixture
def slot(monkeypatch: pytest.MonkeyPatch) -> ModelSlot:
    """A slot whose batch is scripted."""
    monkeypatch.setattr(ModelSlot, "_new_batch", lambda self: ScriptedBatch())
    info = ModelInfo(name="m", engine="mlx", source="m", memory_bytes=0, context_length=64)
    return ModelSlot(info=info, model=None, tokenizer=Tokenizer(), limits=BatchLimits())


def join(slot: ModelSlot, events: list[tuple[int, Any]], ticket: int) -> None:
    """A request joins the batch under uid == ticket."""
    stream = RequestStream(
        ticket=ticket,
        sink=Sink(ticket, events),  # type: ignore[arg-type]
        decoder=IncrementalDecoder(Tokenizer().decode),
        sampling=Sampling(max_tokens=8),
        prompt_tokens=3,
        cached_tokens=0,
        submitted_at=0.0,
    )
    slot._add(ticket, stream)


def test_a_step_hands_out_first_tokens_before_the_running_streams_next_ones(
    slot: ModelSlot,
) -> None:
    events: list[tuple[int, Any]] = []
    batch: ScriptedBatch = slot.batch
    for ticket in (1, 2):
        join(slot, events, ticket)
    batch.steps.append([Response(1, 1), Response(2, 2)])
    slot.step()
    for ticket in (3, 4):
        join(slot, events, ticket)
    # The batch lists the newcomers after the running rows, as mlx-lm's does.
    batch.steps.append([Response(1, 3), Response(3, 4), Response(2, 5), Response(4, 6)])
    slot.step()
    second = [ticket for ticket, _ in events[2:]]
    assert second == [3, 4, 1, 2]  # newcomers first, each group in the batch's order
    firsts = {t: e for t, e in events[2:] if t in (3, 4)}
    assert all(isinstance(e, Delta) and e.prompt_tokens == 3 for e in firsts.values())
    assert slot.streams[3].first_token_at is not None


class Inserted:
    """A batch that records what joins it (and says nothing of its steps)."""

    prompt_cache_nbytes = 0

    def __init__(self) -> None:
        self.prompts: list[list[int]] = []

    def insert(self, prompts: list[list[int]], **rows: Any) -> list[int]:
        self.prompts += prompts
        return [len(self.prompts)]


@pytest.mark.parametrize("same_tokenizer", [True, False])
def test_a_prompt_rendered_off_the_worker_is_used_only_with_this_models_tokenizer(
    slot: ModelSlot, monkeypatch: pytest.MonkeyPatch, same_tokenizer: bool
) -> None:
    rendered_here: list[str] = []

    def render(tokenizer: Any, request: Any, constrained: bool = False) -> list[int]:
        rendered_here.append(request.text)
        return [7, 7]

    monkeypatch.setattr("node_agent.engines.mlx_slot.render_prompt", render)
    slot.batch = Inserted()
    tokenizer = slot.tokenizer if same_tokenizer else Tokenizer()  # the model was replaced
    request = GenerateRequest(request_id="r", model="m", text="hi")
    slot.submit(1, request, Sink(1, []), 0.0, 0, rendered=(tokenizer, [1, 2, 3]))  # type: ignore[arg-type]
    if same_tokenizer:
        assert (slot.batch.prompts, rendered_here) == ([[1, 2, 3]], [])
    else:
        assert (slot.batch.prompts, rendered_here) == ([[7, 7]], ["hi"])
