"""The servicer's pure parts: conversion, error mapping, the busy meter, load event order."""

from __future__ import annotations

import gc
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import cast

import grpc
import pytest

from node_agent import errors
from node_agent.engines.base import Engine, LoadSpec
from node_agent.models import ResolvedModel
from node_agent.node_facts import BusyMeter, NodeFacts, Probe
from node_agent.proto import pb
from node_agent.service import AgentService, _status_of
from node_agent.types import Delta, Finished, LoadProgress, LoadStage, ModelInfo, Sampling, Usage
from node_agent.wire import generate_request, generate_response


def test_unset_sampling_fields_take_the_defaults() -> None:
    request = generate_request(pb.GenerateRequest(model="demo", text="hi"))
    assert request.sampling == Sampling() and request.text == "hi" and request.messages is None
    assert request.request_id  # one is made up when the client sends none


def test_set_sampling_fields_are_kept_even_when_zero() -> None:
    s = pb.Sampling(max_tokens=7, temperature=0.0, top_p=0.5, stop=["\n"], seed=0)
    request = generate_request(pb.GenerateRequest(request_id="r1", model="m", text="x", sampling=s))
    assert request.sampling == Sampling(
        max_tokens=7, temperature=0.0, top_p=0.5, stop=("\n",), seed=0
    )
    assert request.request_id == "r1"


def test_chat_becomes_messages() -> None:
    chat = pb.Chat(messages=[pb.ChatMessage(role="user", content="hello")])
    request = generate_request(pb.GenerateRequest(model="m", chat=chat))
    assert request.text is None and [(m.role, m.content) for m in request.messages or ()] == [
        ("user", "hello")
    ]


def test_no_prompt_at_all_is_left_for_the_engine_to_refuse() -> None:
    request = generate_request(pb.GenerateRequest(model="m"))
    assert request.text is None and request.messages is None


def test_events_become_responses() -> None:
    assert generate_response(Delta("ab", 2)).delta.tokens == 2
    usage = Usage(
        prompt_tokens=3,
        completion_tokens=4,
        cached_prompt_tokens=1,
        ttft_seconds=0.1,
        decode_tokens_per_second=9.0,
        duration_seconds=0.5,
    )
    finished = generate_response(Finished("stop", usage)).finished
    assert finished.finish_reason == "stop" and finished.usage.cached_prompt_tokens == 1


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (errors.UnknownModel("x"), grpc.StatusCode.NOT_FOUND),
        (errors.ModelNotLoaded("x"), grpc.StatusCode.FAILED_PRECONDITION),
        (errors.InvalidRequest("x"), grpc.StatusCode.INVALID_ARGUMENT),
        (errors.PromptTooLong("x"), grpc.StatusCode.OUT_OF_RANGE),
        (errors.OutOfMemory("x"), grpc.StatusCode.RESOURCE_EXHAUSTED),
        (errors.EngineUnavailable("x"), grpc.StatusCode.UNAVAILABLE),
        (errors.LoadFailed("x"), grpc.StatusCode.INTERNAL),
    ],
)
def test_each_domain_error_has_one_code(error: Exception, code: grpc.StatusCode) -> None:
    assert _status_of(error) == (code, "x")


def test_an_unexpected_error_is_internal_and_named() -> None:
    code, message = _status_of(KeyError("boom"))
    assert code == grpc.StatusCode.INTERNAL and message.startswith("internal error: KeyError")


def test_busy_meter_counts_overlapping_generations_once() -> None:
    now = [0.0]
    meter = BusyMeter(clock=lambda: now[0])
    meter.enter()
    now[0] = 1.0
    meter.enter()
    now[0] = 2.0
    meter.leave()
    assert meter.seconds() == 2.0
    now[0] = 3.0
    meter.leave()
    now[0] = 10.0
    assert meter.seconds() == 3.0


class _Context:
    """The two ServicerContext methods LoadModel uses on a failed load."""

    code: grpc.StatusCode | None = None
    details = ""

    def set_code(self, code: grpc.StatusCode) -> None:
        self.code = code

    def set_details(self, details: str) -> None:
        self.details = details


class _LoadOnlyEngine:
    name = "mlx"
    frozen_at_unload: int | None = None

    async def load(self, spec: LoadSpec) -> ModelInfo:
        return ModelInfo(
            name=spec.name, engine="mlx", source=spec.source, memory_bytes=1, context_length=8
        )

    async def unload(self, name: str) -> None:
        self.frozen_at_unload = gc.get_freeze_count()
        if name != "m":
            raise errors.ModelNotLoaded(name)


def _downloading_resolve(
    ref: str, data_dir: Path, progress: Callable[[LoadProgress], None]
) -> ResolvedModel:
    """A hub download as models.resolve reports it: progress from its own thread."""
    if ref == "org/missing":
        raise errors.UnknownModel("could not download org/missing: no such model on the Hub")
    for done in (0, 50, 100):
        progress(
            LoadProgress(
                stage=LoadStage.DOWNLOADING,
                message=f"downloading {ref}",
                bytes_done=done,
                bytes_total=100,
            )
        )
    return ResolvedModel(name=ref, source=ref, path=data_dir)


def _service(tmp_path: Path, engine: _LoadOnlyEngine | None = None) -> AgentService:
    """A service whose loads need no facts, no probe and no real engine."""
    engine = engine or _LoadOnlyEngine()
    return AgentService(
        facts=cast(NodeFacts, None),
        engine=cast(Engine, engine),
        data_dir=tmp_path,
        probe=cast(Callable[[], Probe], None),
        resolve=_downloading_resolve,
    )


async def test_load_relays_download_progress_in_order(tmp_path: Path) -> None:
    context = _Context()
    request = pb.LoadModelRequest(model="org/m", name="m")
    events = [e async for e in _service(tmp_path).LoadModel(request, context)]
    stages = [pb.LoadProgress.Stage.Name(e.stage) for e in events]
    assert stages == ["RESOLVING", "DOWNLOADING", "DOWNLOADING", "DOWNLOADING", "LOADING", "READY"]
    assert [e.bytes_done for e in events[1:4]] == [0, 50, 100]
    assert events[-1].model.name == "m" and context.code is None


async def test_a_failed_load_ends_with_failed_and_the_status_code(tmp_path: Path) -> None:
    context = _Context()
    request = pb.LoadModelRequest(model="org/missing")
    events = [e async for e in _service(tmp_path).LoadModel(request, context)]
    assert [e.stage for e in events] == [pb.LoadProgress.RESOLVING, pb.LoadProgress.FAILED]
    assert "no such model" in events[-1].message
    assert context.code == grpc.StatusCode.NOT_FOUND and context.details == events[-1].message


@pytest.fixture
def thawed_after() -> Iterator[None]:
    yield
    gc.unfreeze()


@pytest.mark.usefixtures("thawed_after")
async def test_a_load_freezes_the_heap_and_an_unload_thaws_it_first(tmp_path: Path) -> None:
    gc.unfreeze()
    engine = _LoadOnlyEngine()
    service = _service(tmp_path, engine)
    request = pb.LoadModelRequest(model="org/m", name="m")
    [_ async for _ in service.LoadModel(request, _Context())]
    assert gc.get_freeze_count() > 0  # node_agent/heap.py: full collections skip all that
    for name, unloaded in (("m", True), ("other", False)):
        reply = await service.UnloadModel(pb.UnloadModelRequest(model=name), _Context())
        assert reply.unloaded is unloaded
        assert engine.frozen_at_unload == 0  # the engine's own collection can free the model
        assert gc.get_freeze_count() > 0
