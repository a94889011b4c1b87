"""Requests in the OpenAI wire format (gateway/openai/parse.py): what is refused, with which
parameter named, and what an accepted one becomes for the agent."""

from __future__ import annotations

import json
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.testclient import TestClient
from openai.types.chat import ChatCompletionMessageParam

from cluster.errors import InvalidRequest
from cluster.gateway.openai.parse import (
    ChatCompletionRequest,
    CompletionRequest,
    parse_request,
    to_generate_request,
    validation_error_to_api,
)
from node_agent.types import TOOLS, ChatMessage, Sampling, ToolCall

USER: list[ChatCompletionMessageParam] = [{"role": "user", "content": "hi"}]


def chat(**fields: Any) -> dict[str, Any]:
    return {"model": "demo", "messages": USER, **fields}


def completion(**fields: Any) -> dict[str, Any]:
    return {"model": "demo", "prompt": "Once upon", **fields}


def rejected(model: type[Any], body: dict[str, Any] | str) -> InvalidRequest:
    raw = body if isinstance(body, str) else json.dumps(body)
    with pytest.raises(InvalidRequest) as info:
        parse_request(model, raw)
    return info.value


# --- request validation -------------------------------------------------------------------------

CHAT_REJECTS = [
    ({"messages": USER}, "model", "missing_required_parameter"),
    ({"model": "demo"}, "messages", "missing_required_parameter"),
    (chat(model=""), "model", "invalid_value"),
    (chat(model=5), "model", "invalid_type"),
    (chat(messages=[]), "messages", "invalid_value"),
    (chat(messages="hi"), "messages", "invalid_type"),
    (chat(messages=[{"role": "bot", "content": "x"}]), "messages.0.role", "invalid_value"),
    (chat(messages=[{"role": "function", "content": "x"}]), "messages.0.role", "invalid_value"),
    (chat(messages=[{"content": "x"}]), "messages.0.role", "missing_required_parameter"),
    (chat(messages=[{"role": "user"}]), "messages.0.content", "missing_required_parameter"),
    (chat(messages=[{"role": "user", "content": 5}]), "messages.0.content", "invalid_type"),
    (
        chat(messages=[{"role": "user", "content": [{"type": "text"}]}]),
        "messages.0.content.0.text",
        "missing_required_parameter",
    ),
    (
        chat(
            messages=[
                USER[0],
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "look"},
                        {"type": "image_url", "image_url": {"url": "x"}},
                    ],
                },
            ]
        ),
        "messages.1.content.1.type",
        "unsupported_value",
    ),
    (chat(temperature=3), "temperature", "invalid_value"),
    (chat(temperature=-0.1), "temperature", "invalid_value"),
    (chat(temperature="0.5"), "temperature", "invalid_type"),
    (chat(top_p=0), "top_p", "invalid_value"),
    (chat(top_p=1.5), "top_p", "invalid_value"),
    (chat(n=9), "n", "invalid_value"),
    (chat(n=0), "n", "invalid_value"),
    (chat(n="2"), "n", "invalid_type"),
    (chat(stop=["a", "b", "c", "d", "e"]), "stop", "invalid_value"),
    (chat(stop=5), "stop", "invalid_type"),
    (chat(stop=["a", 5]), "stop.1", "invalid_type"),
    (chat(max_tokens=0), "max_tokens", "invalid_value"),
    (chat(max_tokens="10"), "max_tokens", "invalid_type"),
    (chat(max_tokens=1.5), "max_tokens", "invalid_type"),
    (chat(max_tokens=True), "max_tokens", "invalid_type"),
    (chat(max_completion_tokens=-1), "max_completion_tokens", "invalid_value"),
    (chat(seed="1"), "seed", "invalid_type"),
    (chat(stream="yes"), "stream", "invalid_type"),
    (chat(stream_options={"include_usage": "yes"}), "stream_options.include_usage", "invalid_type"),
    (chat(user=5), "user", "invalid_type"),
    (chat(presence_penalty=3), "presence_penalty", "invalid_value"),
    (chat(logprobs="yes"), "logprobs", "invalid_type"),
    (chat(logprobs=True, top_logprobs=21), "top_logprobs", "invalid_value"),
    (chat(logprobs=True, top_logprobs=-1), "top_logprobs", "invalid_value"),
    (chat(top_logprobs=3), "top_logprobs", "invalid_value"),
    (chat(logprobs=False, top_logprobs=3), "top_logprobs", "invalid_value"),
    (chat(logit_bias={"50256": -100}), "logit_bias", "unsupported_value"),
    (chat(functions=[{"name": "f"}]), "functions", "unsupported_value"),
    (chat(audio={"voice": "alloy", "format": "mp3"}), "audio", "unsupported_value"),
    (chat(modalities=["text", "audio"]), "modalities.1", "invalid_value"),
    (chat(chat_template_kwargs="thinking"), "chat_template_kwargs", "invalid_type"),
]


@pytest.mark.parametrize(("body", "param", "code"), CHAT_REJECTS)
def test_chat_request_rejected_with_param(body: dict[str, Any], param: str, code: str) -> None:
    error = rejected(ChatCompletionRequest, body)
    assert (error.status, error.param, error.code) == (400, param, code)
    assert param in error.message


COMPLETION_REJECTS = [
    ({"model": "demo"}, "prompt", "missing_required_parameter"),
    (completion(prompt=["a", "b"]), "prompt", "unsupported_value"),
    (completion(prompt=[1, 2, 3]), "prompt", "unsupported_value"),
    (completion(prompt=[[1, 2]]), "prompt", "unsupported_value"),
    (completion(prompt=[]), "prompt", "unsupported_value"),
    (completion(prompt=5), "prompt", "invalid_type"),
    (completion(best_of=2), "best_of", "unsupported_value"),
    (completion(n=2, best_of=3), "best_of", "unsupported_value"),
    (completion(echo=True), "echo", "unsupported_value"),
    (completion(suffix="end"), "suffix", "unsupported_value"),
    (completion(logprobs=6), "logprobs", "invalid_value"),
    (completion(logprobs=-1), "logprobs", "invalid_value"),
    (completion(logprobs=True), "logprobs", "invalid_type"),
    (completion(n=9), "n", "invalid_value"),
]


@pytest.mark.parametrize(("body", "param", "code"), COMPLETION_REJECTS)
def test_completion_request_rejected_with_param(
    body: dict[str, Any], param: str, code: str
) -> None:
    error = rejected(CompletionRequest, body)
    assert (error.status, error.param, error.code) == (400, param, code)


def test_unsupported_features_say_so() -> None:
    assert "not supported" in rejected(CompletionRequest, completion(prompt=["a", "b"])).message
    assert (
        "'image_url'"
        in rejected(
            ChatCompletionRequest,
            chat(messages=[{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}]),
        ).message
    )
    assert rejected(ChatCompletionRequest, chat(n=9)).message == (
        "n: Input should be less than or equal to 8"
    )
    assert rejected(ChatCompletionRequest, chat(top_logprobs=2)).message == (
        "top_logprobs: 'logprobs' must be true to use 'top_logprobs'"
    )


def test_missing_parameter_message_is_openais() -> None:
    error = rejected(ChatCompletionRequest, {"messages": USER})
    assert error.message == "Missing required parameter: 'model'."


def test_body_that_is_not_json_or_not_an_object() -> None:
    broken = rejected(ChatCompletionRequest, '{"model": ')
    assert (broken.param, broken.code) == (None, "invalid_json")
    assert "not valid JSON" in broken.message
    listed = rejected(ChatCompletionRequest, "[1, 2]")
    assert listed.param is None and "JSON object" in listed.message


def test_known_harmless_and_vendor_fields_are_accepted() -> None:
    body = chat(
        n=1,
        stop="END",
        seed=3,
        user="ana",
        stream=False,
        presence_penalty=0.5,
        frequency_penalty=-0.5,
        logit_bias={},
        logprobs=False,
        top_logprobs=0,
        response_format={"type": "text"},
        tools=[],
        tool_choice="none",
        parallel_tool_calls=True,
        store=False,
        metadata={"k": "v"},
        service_tier="auto",
        reasoning_effort="low",
        prompt_cache_key="session-1",
        safety_identifier="u1",
        verbosity="low",
        modalities=["text"],
        audio=None,
        prediction={"type": "content", "content": "x"},
        chat_template_kwargs={},
        stream_options={"include_usage": True, "include_obfuscation": False},
        top_k=20,
        repetition_penalty=1.1,  # vendor fields (vLLM) pass through
    )
    req = parse_request(ChatCompletionRequest, json.dumps(body))
    assert req.stop == ["END"] and req.include_usage
    assert req.model_extra is not None and req.model_extra["top_k"] == 20


def test_content_parts_are_joined_and_null_assistant_content_is_empty() -> None:
    messages = [
        {"role": "developer", "content": "be brief"},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "one"},
                {"type": "text", "text": "two", "cache_control": {}},
            ],
        },
        {"role": "assistant", "content": None, "tool_calls": []},
        {"role": "tool", "content": "42", "tool_call_id": "c1"},
    ]
    req = parse_request(ChatCompletionRequest, json.dumps(chat(messages=messages)))
    assert [m.text for m in req.messages] == ["be brief", "one\ntwo", "", "42"]


def test_fastapi_validation_errors_are_translated_too() -> None:
    app = FastAPI()

    @app.exception_handler(RequestValidationError)
    async def invalid(_: Any, exc: RequestValidationError) -> JSONResponse:
        error = validation_error_to_api(exc)
        return JSONResponse(error.body(), status_code=error.status)

    @app.post("/v1/chat/completions")
    async def create(req: ChatCompletionRequest) -> dict[str, str]:
        return {"model": req.model}

    with TestClient(app) as http:
        bad = http.post("/v1/chat/completions", json=chat(messages=[{"role": "x"}]))
        good = http.post("/v1/chat/completions", json=chat(temperature=0))
        broken = http.post(
            "/v1/chat/completions", content=b"{nope", headers={"content-type": "application/json"}
        )
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "messages.0.role"
    assert good.json() == {"model": "demo"}
    assert broken.status_code == 400 and broken.json()["error"]["param"] is None


# --- conversion to the agent's request ----------------------------------------------------------


def test_chat_conversion_keeps_the_agents_defaults() -> None:
    req = parse_request(ChatCompletionRequest, json.dumps(chat()))
    gen = to_generate_request(req, "r1")
    assert (gen.request_id, gen.model, gen.text) == ("r1", "demo", None)
    assert gen.messages == (ChatMessage("user", "hi"),)
    assert gen.sampling == Sampling()


def test_chat_conversion_carries_every_knob() -> None:
    body = chat(
        max_tokens=9, max_completion_tokens=5, temperature=0, top_p=0.5, stop=["a", "b"], seed=11
    )
    gen = to_generate_request(parse_request(ChatCompletionRequest, json.dumps(body)), "r2")
    # max_completion_tokens supersedes max_tokens; temperature 0 is a value, not "unset".
    assert gen.sampling == Sampling(
        max_tokens=5, temperature=0.0, top_p=0.5, stop=("a", "b"), seed=11
    )


def test_completion_conversion_sends_text() -> None:
    body = completion(prompt=["Once upon"], max_tokens=3, stop="\n")
    gen = to_generate_request(parse_request(CompletionRequest, json.dumps(body)), "r3")
    assert (gen.text, gen.messages) == ("Once upon", None)
    assert gen.sampling == Sampling(max_tokens=3, stop=("\n",))


def test_tool_history_becomes_the_agents_messages() -> None:
    messages = [
        {"role": "developer", "content": "be brief"},
        {"role": "system", "content": [{"type": "text", "text": "use tools"}]},
        {"role": "user", "content": "weather?"},
        {
            "role": "assistant",
            "content": None,
            "reasoning_content": "I should look it up",
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'},
                },
                # Some clients send the arguments back as the object itself.
                {"id": "call_2", "function": {"name": "get_time", "arguments": {"tz": "CET"}}},
            ],
        },
        {"role": "tool", "content": "rain", "tool_call_id": "call_1"},
        {"role": "tool", "content": "noon", "tool_call_id": "call_2", "name": "clock"},
        {"role": "assistant", "content": "Rain at noon.", "reasoning": "done"},
        {"role": "developer", "content": "later instructions stay in place"},
    ]
    gen = to_generate_request(
        parse_request(ChatCompletionRequest, json.dumps(chat(messages=messages))), "r"
    )
    assert gen.messages == (
        ChatMessage("system", "be brief\n\nuse tools"),  # the leading run merged, as one
        ChatMessage("user", "weather?"),
        ChatMessage(
            "assistant",
            "",
            tool_calls=(
                ToolCall(id="call_1", name="get_weather", arguments='{"city": "Oslo"}'),
                ToolCall(id="call_2", name="get_time", arguments='{"tz": "CET"}'),
            ),
            reasoning="I should look it up",
        ),
        ChatMessage("tool", "rain", tool_call_id="call_1", name="get_weather"),
        ChatMessage("tool", "noon", tool_call_id="call_2", name="clock"),
        ChatMessage("assistant", "Rain at noon.", reasoning="done"),
        ChatMessage("system", "later instructions stay in place"),
    )
    assert gen.needs() == {TOOLS}


def test_logprobs_n_and_template_options_reach_the_agent() -> None:
    body = chat(logprobs=True, top_logprobs=5, n=3, chat_template_kwargs={"enable_thinking": False})
    req = parse_request(ChatCompletionRequest, json.dumps(body))
    gen = to_generate_request(req, "r")
    assert (req.choices, req.logprob_alternatives, gen.top_logprobs) == (3, 5, 5)
    assert json.loads(gen.template_options) == {"enable_thinking": False}
    plain = to_generate_request(parse_request(ChatCompletionRequest, json.dumps(chat())), "r")
    assert (plain.top_logprobs, plain.template_options, plain.constraint) == (None, "", None)
    bare = parse_request(ChatCompletionRequest, json.dumps(chat(logprobs=True)))
    assert to_generate_request(bare, "r").top_logprobs == 0  # the tokens' own, no alternatives
    assert bare.choices == 1 and bare.logprob_alternatives == 0


def test_completion_logprobs_and_n() -> None:
    req = parse_request(CompletionRequest, json.dumps(completion(logprobs=3, n=2, best_of=2)))
    gen = to_generate_request(req, "r")
    assert (req.choices, gen.top_logprobs) == (2, 3)
    zero = parse_request(CompletionRequest, json.dumps(completion(logprobs=0)))
    assert to_generate_request(zero, "r").top_logprobs == 0
    assert (
        to_generate_request(
            parse_request(CompletionRequest, json.dumps(completion())), "r"
        ).top_logprobs
        is None
    )


def test_prefix_key_parts_cover_tools_and_calls() -> None:
    call = {"id": "c", "function": {"name": "f", "arguments": "{}"}}
    messages = [*USER, {"role": "assistant", "content": None, "tool_calls": [call]}]
    tools = [{"type": "function", "function": {"name": "f"}}]
    with_tools = parse_request(
        ChatCompletionRequest, json.dumps(chat(messages=messages, tools=tools))
    )
    parts = with_tools.key_parts()
    assert parts[0][0] == "tools" and '"f"' in parts[0][1]
    assert parts[1:] == [("user", "hi"), ("assistant", "f{}")]
    without = parse_request(ChatCompletionRequest, json.dumps(chat()))
    assert without.key_parts() == [("user", "hi")]
