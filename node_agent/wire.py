"""Protobuf ⇄ domain records for the agent contract, both directions in one place.

The agent's service encodes with the `*_pb` functions; the controller's node client decodes with
the others. Keeping each pair side by side is what keeps the two ends of the wire in step.
"""

from __future__ import annotations

import uuid

from node_agent.proto import pb
from node_agent.types import (
    ChatMessage,
    Constraint,
    ConstraintKind,
    CostProfile,
    Delta,
    DiskModel,
    Embeddings,
    Finished,
    GenerateEvent,
    GenerateRequest,
    LoadProgress,
    LoadStage,
    ModelInfo,
    ModelStatus,
    ReasoningDelta,
    Sampling,
    TokenLogprob,
    Tool,
    ToolCall,
    ToolCallDelta,
    ToolChoice,
    ToolChoiceMode,
    TopLogprob,
    Usage,
)

_STAGES = {
    LoadStage.RESOLVING: pb.LoadProgress.RESOLVING,
    LoadStage.DOWNLOADING: pb.LoadProgress.DOWNLOADING,
    LoadStage.LOADING: pb.LoadProgress.LOADING,
    LoadStage.READY: pb.LoadProgress.READY,
    LoadStage.FAILED: pb.LoadProgress.FAILED,
}
_STAGES_BACK = {v: k for k, v in _STAGES.items()}
_MODES = {
    ToolChoiceMode.AUTO: pb.ToolChoice.AUTO,
    ToolChoiceMode.NONE: pb.ToolChoice.NONE,
    ToolChoiceMode.REQUIRED: pb.ToolChoice.REQUIRED,
    ToolChoiceMode.NAMED: pb.ToolChoice.NAMED,
}
_MODES_BACK = {v: k for k, v in _MODES.items()}


def model_info_pb(m: ModelInfo) -> pb.ModelInfo:
    """ModelInfo as protobuf."""
    return pb.ModelInfo(
        name=m.name,
        engine=m.engine,
        source=m.source,
        memory_bytes=m.memory_bytes,
        context_length=m.context_length,
        capabilities=sorted(m.capabilities),
    )


def model_info(m: pb.ModelInfo) -> ModelInfo:
    """ModelInfo from protobuf."""
    return ModelInfo(
        name=m.name,
        engine=m.engine,
        source=m.source,
        memory_bytes=m.memory_bytes,
        context_length=m.context_length,
        capabilities=frozenset(m.capabilities),
    )


def disk_model_pb(d: DiskModel) -> pb.DiskModel:
    """DiskModel as protobuf."""
    return pb.DiskModel(
        source=d.source,
        weights_bytes=d.weights_bytes,
        kv_bytes_per_token=d.kv_bytes_per_token,
        context_length=d.context_length,
    )


def disk_model(d: pb.DiskModel) -> DiskModel:
    """DiskModel from protobuf."""
    return DiskModel(
        source=d.source,
        weights_bytes=d.weights_bytes,
        kv_bytes_per_token=d.kv_bytes_per_token,
        context_length=d.context_length,
    )


def cost_pb(c: CostProfile) -> pb.CostProfile:
    """CostProfile as protobuf."""
    return pb.CostProfile(
        price_usd=c.price_usd,
        amortize_months=c.amortize_months,
        idle_watts=c.idle_watts,
        busy_watts=c.busy_watts,
        kwh_usd=c.kwh_usd,
    )


def cost(c: pb.CostProfile) -> CostProfile:
    """CostProfile from protobuf."""
    return CostProfile(
        price_usd=c.price_usd,
        amortize_months=c.amortize_months,
        idle_watts=c.idle_watts,
        busy_watts=c.busy_watts,
        kwh_usd=c.kwh_usd,
    )


def model_status_pb(s: ModelStatus) -> pb.ModelStatus:
    """ModelStatus as protobuf."""
    return pb.ModelStatus(
        model=s.model,
        running=s.running,
        waiting=s.waiting,
        generated_tokens=s.generated_tokens,
        prompt_tokens=s.prompt_tokens,
        cached_prompt_tokens=s.cached_prompt_tokens,
        prompt_cache_hits=s.prompt_cache_hits,
        requests_finished=s.requests_finished,
        memory_bytes=s.memory_bytes,
        busy_seconds=s.busy_seconds,
        kv_cache_usage=s.kv_cache_usage,
        capabilities=sorted(s.capabilities),
        context_length=s.context_length,
        engine=s.engine,
    )


def model_status(m: pb.ModelStatus) -> ModelStatus:
    """ModelStatus from protobuf."""
    return ModelStatus(
        model=m.model,
        running=m.running,
        waiting=m.waiting,
        generated_tokens=m.generated_tokens,
        prompt_tokens=m.prompt_tokens,
        cached_prompt_tokens=m.cached_prompt_tokens,
        prompt_cache_hits=m.prompt_cache_hits,
        requests_finished=m.requests_finished,
        memory_bytes=m.memory_bytes,
        busy_seconds=m.busy_seconds,
        kv_cache_usage=m.kv_cache_usage,
        capabilities=frozenset(m.capabilities),
        context_length=m.context_length,
        engine=m.engine,
    )


def load_progress_pb(p: LoadProgress) -> pb.LoadProgress:
    """LoadProgress as protobuf."""
    out = pb.LoadProgress(
        stage=_STAGES[p.stage],
        message=p.message,
        bytes_done=p.bytes_done,
        bytes_total=p.bytes_total,
    )
    if p.model is not None:
        out.model.CopyFrom(model_info_pb(p.model))
    return out


def load_progress(p: pb.LoadProgress) -> LoadProgress:
    """LoadProgress from protobuf; an unknown stage reads as FAILED."""
    return LoadProgress(
        stage=_STAGES_BACK.get(p.stage, LoadStage.FAILED),
        message=p.message,
        bytes_done=p.bytes_done,
        bytes_total=p.bytes_total,
        model=model_info(p.model) if p.HasField("model") else None,
    )


def generate_request_pb(request: GenerateRequest) -> pb.GenerateRequest:
    """GenerateRequest as protobuf."""
    s = request.sampling
    sampling_pb = pb.Sampling(
        max_tokens=s.max_tokens, temperature=s.temperature, top_p=s.top_p, stop=list(s.stop)
    )
    if s.seed is not None:
        sampling_pb.seed = s.seed
    out = pb.GenerateRequest(
        request_id=request.request_id, model=request.model, sampling=sampling_pb
    )
    if request.messages is not None:
        out.chat.CopyFrom(_chat_pb(request))
    else:
        out.text = request.text or ""
    if request.constraint is not None:
        out.constraint.CopyFrom(_constraint_pb(request.constraint))
    if request.top_logprobs is not None:
        out.top_logprobs = request.top_logprobs
    return out


def _chat_pb(request: GenerateRequest) -> pb.Chat:
    choice = request.tool_choice
    return pb.Chat(
        messages=[_message_pb(m) for m in request.messages or ()],
        tools=[_tool_pb(t) for t in request.tools],
        tool_choice=pb.ToolChoice(mode=_MODES[choice.mode], name=choice.name),
        parallel_tool_calls=request.parallel_tool_calls,
        template_options_json=request.template_options,
    )


def _tool_pb(t: Tool) -> pb.Tool:
    out = pb.Tool(
        name=t.name, description=t.description, parameters_json=t.parameters, strict=t.strict
    )
    if t.grammar is not None:
        out.input_grammar.CopyFrom(_constraint_pb(t.grammar))
    return out


def _tool(t: pb.Tool) -> Tool:
    grammar = _constraint(t.input_grammar) if t.HasField("input_grammar") else None
    return Tool(
        name=t.name,
        description=t.description,
        parameters=t.parameters_json,
        strict=t.strict,
        grammar=grammar,
    )


def _message_pb(m: ChatMessage) -> pb.ChatMessage:
    return pb.ChatMessage(
        role=m.role,
        content=m.content,
        tool_calls=[pb.ToolCall(id=c.id, name=c.name, arguments=c.arguments) for c in m.tool_calls],
        tool_call_id=m.tool_call_id,
        name=m.name,
        reasoning=m.reasoning,
    )


def _message(m: pb.ChatMessage) -> ChatMessage:
    calls = tuple(ToolCall(id=c.id, name=c.name, arguments=c.arguments) for c in m.tool_calls)
    return ChatMessage(m.role, m.content, calls, m.tool_call_id, m.name, m.reasoning)


def _constraint_pb(c: Constraint) -> pb.Constraint:
    if c.kind is ConstraintKind.JSON_SCHEMA:
        return pb.Constraint(json_schema=c.text)
    if c.kind is ConstraintKind.LARK:
        return pb.Constraint(lark=c.text)
    if c.kind is ConstraintKind.REGEX:
        return pb.Constraint(regex=c.text)
    return pb.Constraint(json_object=True)


def _constraint(c: pb.Constraint) -> Constraint | None:
    kind = c.WhichOneof("kind")
    if kind is None:
        return None
    text = "" if kind == "json_object" else getattr(c, kind)
    return Constraint(ConstraintKind(kind), text)


def generate_request(r: pb.GenerateRequest) -> GenerateRequest:
    """GenerateRequest from protobuf; unset optional sampling fields take the defaults."""
    prompt = r.WhichOneof("prompt")
    chat = r.chat
    choice = ToolChoice(
        _MODES_BACK.get(chat.tool_choice.mode, ToolChoiceMode.AUTO), chat.tool_choice.name
    )
    return GenerateRequest(
        request_id=r.request_id or uuid.uuid4().hex,
        model=r.model,
        text=r.text if prompt == "text" else None,
        messages=tuple(_message(m) for m in chat.messages) if prompt == "chat" else None,
        sampling=sampling(r.sampling),
        tools=tuple(_tool(t) for t in chat.tools),
        tool_choice=choice,
        parallel_tool_calls=chat.parallel_tool_calls if prompt == "chat" else True,
        template_options=chat.template_options_json,
        constraint=_constraint(r.constraint) if r.HasField("constraint") else None,
        top_logprobs=r.top_logprobs if r.HasField("top_logprobs") else None,
    )


def sampling(s: pb.Sampling) -> Sampling:
    """Sampling from protobuf: 0 max_tokens and unset optionals mean the defaults."""
    default = Sampling()
    return Sampling(
        max_tokens=s.max_tokens or default.max_tokens,
        temperature=s.temperature if s.HasField("temperature") else default.temperature,
        top_p=s.top_p if s.HasField("top_p") else default.top_p,
        stop=tuple(s.stop),
        seed=s.seed if s.HasField("seed") else default.seed,
    )


def usage_pb(u: Usage) -> pb.Usage:
    """Usage as protobuf."""
    return pb.Usage(
        prompt_tokens=u.prompt_tokens,
        completion_tokens=u.completion_tokens,
        cached_prompt_tokens=u.cached_prompt_tokens,
        ttft_seconds=u.ttft_seconds,
        decode_tokens_per_second=u.decode_tokens_per_second,
        duration_seconds=u.duration_seconds,
        reasoning_tokens=u.reasoning_tokens,
    )


def usage(u: pb.Usage) -> Usage:
    """Usage from protobuf."""
    return Usage(
        prompt_tokens=u.prompt_tokens,
        completion_tokens=u.completion_tokens,
        cached_prompt_tokens=u.cached_prompt_tokens,
        ttft_seconds=u.ttft_seconds,
        decode_tokens_per_second=u.decode_tokens_per_second,
        duration_seconds=u.duration_seconds,
        reasoning_tokens=u.reasoning_tokens,
    )


def generate_response(event: GenerateEvent) -> pb.GenerateResponse:
    """One Generate stream message."""
    if isinstance(event, Delta):
        return pb.GenerateResponse(
            delta=pb.Delta(
                text=event.text,
                tokens=event.tokens,
                prompt_tokens=event.prompt_tokens,
                cached_prompt_tokens=event.cached_prompt_tokens,
                logprobs=[_logprob_pb(lp) for lp in event.logprobs],
            )
        )
    if isinstance(event, Finished):
        return pb.GenerateResponse(
            finished=pb.Finished(
                finish_reason=event.finish_reason,
                usage=usage_pb(event.usage),
                stop_sequence=event.stop_sequence,
            )
        )
    if isinstance(event, ReasoningDelta):
        return pb.GenerateResponse(
            reasoning=pb.ReasoningDelta(
                text=event.text,
                tokens=event.tokens,
                prompt_tokens=event.prompt_tokens,
                cached_prompt_tokens=event.cached_prompt_tokens,
            )
        )
    return pb.GenerateResponse(
        tool_call=pb.ToolCallDelta(
            index=event.index,
            id=event.id,
            name=event.name,
            arguments=event.arguments,
            done=event.done,
            tokens=event.tokens,
            prompt_tokens=event.prompt_tokens,
            cached_prompt_tokens=event.cached_prompt_tokens,
        )
    )


def generate_event(response: pb.GenerateResponse) -> GenerateEvent | None:
    """The event one Generate stream message carries; None for an empty or unknown message."""
    kind = response.WhichOneof("event")
    if kind == "delta":
        d = response.delta
        logprobs = tuple(_logprob(lp) for lp in d.logprobs)
        return Delta(d.text, d.tokens, d.prompt_tokens, d.cached_prompt_tokens, logprobs)
    if kind == "finished":
        f = response.finished
        return Finished(f.finish_reason, usage(f.usage), f.stop_sequence)
    if kind == "reasoning":
        r = response.reasoning
        return ReasoningDelta(r.text, r.tokens, r.prompt_tokens, r.cached_prompt_tokens)
    if kind == "tool_call":
        t = response.tool_call
        return ToolCallDelta(
            index=t.index,
            id=t.id,
            name=t.name,
            arguments=t.arguments,
            done=t.done,
            tokens=t.tokens,
            prompt_tokens=t.prompt_tokens,
            cached_prompt_tokens=t.cached_prompt_tokens,
        )
    return None


def _logprob_pb(lp: TokenLogprob) -> pb.TokenLogprob:
    top = [pb.TopLogprob(token=t.token, logprob=t.logprob, bytes=t.bytes) for t in lp.top]
    return pb.TokenLogprob(token=lp.token, logprob=lp.logprob, bytes=lp.bytes, top=top)


def _logprob(lp: pb.TokenLogprob) -> TokenLogprob:
    top = tuple(TopLogprob(t.token, t.logprob, t.bytes) for t in lp.top)
    return TokenLogprob(lp.token, lp.logprob, lp.bytes, top)


def embeddings_pb(e: Embeddings) -> pb.EmbedResponse:
    """An Embed's answer for the wire."""
    vectors = [pb.Embedding(values=v) for v in e.vectors]
    return pb.EmbedResponse(embeddings=vectors, prompt_tokens=e.prompt_tokens)


def embeddings(r: pb.EmbedResponse) -> Embeddings:
    """An Embed's answer off the wire."""
    vectors = [list(e.values) for e in r.embeddings]
    return Embeddings(vectors=vectors, prompt_tokens=r.prompt_tokens)
