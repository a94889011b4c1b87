"""The servicer's pure parts: proto to domain conversion, error mapping, the busy meter."""

from __future__ import annotations

import grpc
import pytest

from node_agent import errors
from node_agent.proto import pb
from node_agent.service import BusyMeter, _status_of, generate_request, generate_response
from node_agent.types import Delta, Finished, Sampling, Usage


def test_unset_sampling_fields_take_the_defaults() -> None:
    request = generate_request(pb.GenerateRequest(model="demo", text="hi"))
    assert request.sampling == Sampling() and request.text == "hi" and request.messages is None
    assert request.request_id  # one is made up when the client sends none


def test_set_sampling_fields_are_kept_even_when_zero() -> None:
    s = pb.Sampling(max_tokens=7, temperature=0.0, top_p=0.5, stop=["\n"], seed=0)
    request = generate_request(pb.GenerateRequest(request_id="r1", model="m", text="x", sampling=s))
    assert request.sampling == Sampling(max_tokens=7, temperature=0.0, top_p=0.5, stop=("\n",),
                                        seed=0)
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
    usage = Usage(prompt_tokens=3, completion_tokens=4, cached_prompt_tokens=1, ttft_seconds=0.1,
                  decode_tokens_per_second=9.0, duration_seconds=0.5)
    finished = generate_response(Finished("stop", usage)).finished
    assert finished.finish_reason == "stop" and finished.usage.cached_prompt_tokens == 1


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (errors.UnknownModel("x"), grpc.StatusCode.NOT_FOUND),
        (errors.ModelNotLoaded("x"), grpc.StatusCode.FAILED_PRECONDITION),
        (errors.InvalidRequest("x"), grpc.StatusCode.INVALID_ARGUMENT),
        (errors.PromptTooLong("x"), grpc.StatusCode.INVALID_ARGUMENT),
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
