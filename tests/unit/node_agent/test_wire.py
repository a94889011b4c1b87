"""Both ends of the wire agree: every record survives protobuf and back unchanged."""

from __future__ import annotations

from node_agent import wire
from node_agent.types import (
    ChatMessage,
    CostProfile,
    Delta,
    Embeddings,
    Finished,
    GenerateRequest,
    LoadProgress,
    LoadStage,
    ModelInfo,
    ModelStatus,
    Sampling,
    Usage,
)

INFO = ModelInfo(name="demo", engine="mlx", source="demo", memory_bytes=10, context_length=2048)
USAGE = Usage(
    prompt_tokens=7,
    completion_tokens=3,
    cached_prompt_tokens=5,
    ttft_seconds=0.25,
    decode_tokens_per_second=40.0,
    duration_seconds=0.5,
)


def test_model_info_status_and_cost_round_trip() -> None:
    status = ModelStatus(
        model="demo",
        running=1,
        waiting=2,
        generated_tokens=3,
        prompt_tokens=4,
        cached_prompt_tokens=5,
        prompt_cache_hits=6,
        requests_finished=7,
        memory_bytes=8,
        busy_seconds=9.5,
        kv_cache_usage=0.25,
    )
    cost = CostProfile(
        price_usd=1399.0, amortize_months=36.0, idle_watts=7.0, busy_watts=45.0, kwh_usd=0.25
    )
    assert wire.model_info(wire.model_info_pb(INFO)) == INFO
    assert wire.model_status(wire.model_status_pb(status)) == status
    assert wire.cost(wire.cost_pb(cost)) == cost


def test_load_progress_round_trips_every_stage() -> None:
    for stage in LoadStage:
        p = LoadProgress(
            stage=stage,
            message="m",
            bytes_done=1,
            bytes_total=2,
            model=INFO if stage is LoadStage.READY else None,
        )
        assert wire.load_progress(wire.load_progress_pb(p)) == p


def test_generate_requests_round_trip_text_and_chat() -> None:
    sampling = Sampling(max_tokens=9, temperature=0.0, top_p=0.5, stop=("\n",), seed=3)
    text = GenerateRequest(request_id="r1", model="demo", text="hi", sampling=sampling)
    chat = GenerateRequest(
        request_id="r2",
        model="demo",
        sampling=Sampling(),
        messages=(ChatMessage("system", "be brief"), ChatMessage("user", "x")),
    )
    assert wire.generate_request(wire.generate_request_pb(text)) == text
    assert wire.generate_request(wire.generate_request_pb(chat)) == chat


def test_generate_events_round_trip() -> None:
    for event in (
        Delta("a", 1, 7, 5),
        Delta("b", 2),
        Finished("stop", USAGE),
        Finished("stop", USAGE, stop_sequence="\n\nHuman:"),
    ):
        assert wire.generate_event(wire.generate_response(event)) == event


def test_disk_model_round_trips() -> None:
    from node_agent.types import DiskModel

    d = DiskModel(
        source="org/m", weights_bytes=5 << 30, kv_bytes_per_token=131072, context_length=32768
    )
    assert wire.disk_model(wire.disk_model_pb(d)) == d


def test_an_agent_request_round_trips_tools_history_constraint_and_logprobs() -> None:
    from node_agent.types import (
        CONSTRAINTS,
        LOGPROBS,
        TOOLS,
        ChatMessage,
        Constraint,
        ConstraintKind,
        GenerateRequest,
        Tool,
        ToolCall,
        ToolChoice,
        ToolChoiceMode,
    )

    call = ToolCall(id="call_1", name="get_weather", arguments='{"city": "Oslo"}')
    request = GenerateRequest(
        request_id="r1",
        model="demo",
        messages=(
            ChatMessage("user", "Weather in Oslo?"),
            ChatMessage("assistant", "", (call,), reasoning="The user wants weather."),
            ChatMessage("tool", "12 C", tool_call_id="call_1", name="get_weather"),
        ),
        tools=(
            Tool(name="get_weather", parameters='{"type": "object"}', strict=True),
            Tool(name="apply_patch", grammar=Constraint(ConstraintKind.LARK, 'start: "x"')),
        ),
        tool_choice=ToolChoice(ToolChoiceMode.NAMED, "get_weather"),
        parallel_tool_calls=False,
        template_options='{"enable_thinking": false}',
        constraint=Constraint(ConstraintKind.JSON_SCHEMA, '{"type": "object"}'),
        top_logprobs=3,
    )
    back = wire.generate_request(wire.generate_request_pb(request))
    assert back == request
    assert back.needs() == {TOOLS, CONSTRAINTS, LOGPROBS}
    plain = GenerateRequest(request_id="r2", model="demo", messages=(ChatMessage("user", "hi"),))
    assert wire.generate_request(wire.generate_request_pb(plain)) == plain
    assert plain.needs() == frozenset()
    for kind in ConstraintKind:
        text = "" if kind is ConstraintKind.JSON_OBJECT else "x"
        only = GenerateRequest(
            request_id="r3", model="demo", text="t", constraint=Constraint(kind, text)
        )
        assert wire.generate_request(wire.generate_request_pb(only)).constraint == only.constraint


def test_agent_events_round_trip() -> None:
    from node_agent.types import (
        Delta,
        ReasoningDelta,
        TokenLogprob,
        ToolCallDelta,
        TopLogprob,
    )

    logprob = TokenLogprob(
        "Hi", -0.25, b"Hi", (TopLogprob("Hi", -0.25, b"Hi"), TopLogprob("Yo", -2.0))
    )
    events = [
        ReasoningDelta("thinking", 2, prompt_tokens=7, cached_prompt_tokens=3),
        Delta("Hi", 1, logprobs=(logprob,)),
        ToolCallDelta(index=0, id="call_1", name="f", tokens=1),
        ToolCallDelta(index=0, arguments='{"a": 1}', tokens=4),
        ToolCallDelta(index=0, done=True),
    ]
    for event in events:
        assert wire.generate_event(wire.generate_response(event)) == event


def test_embeddings_round_trip() -> None:
    sent = Embeddings(vectors=[[0.5, -0.25], [1.0, 0.0]], prompt_tokens=7)
    assert wire.embeddings(wire.embeddings_pb(sent)) == sent
