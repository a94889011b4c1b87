"""Protobuf ⇄ domain records for the agent contract, both directions in one place.

The agent's service encodes with the `*_pb` functions; the controller's node client decodes with
the others. Keeping each pair side by side is what keeps the two ends of the wire in step.
"""

from __future__ import annotations

import uuid

from node_agent.proto import pb
from node_agent.types import (
    ChatMessage,
    CostProfile,
    Delta,
    DiskModel,
    Finished,
    GenerateEvent,
    GenerateRequest,
    LoadProgress,
    LoadStage,
    ModelInfo,
    ModelStatus,
    Sampling,
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


def model_info_pb(m: ModelInfo) -> pb.ModelInfo:
    """ModelInfo as protobuf."""
    return pb.ModelInfo(
        name=m.name,
        engine=m.engine,
        source=m.source,
        memory_bytes=m.memory_bytes,
        context_length=m.context_length,
    )


def model_info(m: pb.ModelInfo) -> ModelInfo:
    """ModelInfo from protobuf."""
    return ModelInfo(
        name=m.name,
        engine=m.engine,
        source=m.source,
        memory_bytes=m.memory_bytes,
        context_length=m.context_length,
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
        out.chat.messages.extend(
            pb.ChatMessage(role=m.role, content=m.content) for m in request.messages
        )
    else:
        out.text = request.text or ""
    return out


def generate_request(r: pb.GenerateRequest) -> GenerateRequest:
    """GenerateRequest from protobuf; unset optional sampling fields take the defaults."""
    prompt = r.WhichOneof("prompt")
    messages = None
    if prompt == "chat":
        messages = tuple(ChatMessage(m.role, m.content) for m in r.chat.messages)
    return GenerateRequest(
        request_id=r.request_id or uuid.uuid4().hex,
        model=r.model,
        text=r.text if prompt == "text" else None,
        messages=messages,
        sampling=sampling(r.sampling),
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
    )


def generate_response(event: GenerateEvent) -> pb.GenerateResponse:
    """One Generate stream message."""
    if isinstance(event, Finished):
        return pb.GenerateResponse(
            finished=pb.Finished(finish_reason=event.finish_reason, usage=usage_pb(event.usage))
        )
    return pb.GenerateResponse(
        delta=pb.Delta(
            text=event.text,
            tokens=event.tokens,
            prompt_tokens=event.prompt_tokens,
            cached_prompt_tokens=event.cached_prompt_tokens,
        )
    )


def generate_event(response: pb.GenerateResponse) -> GenerateEvent | None:
    """The event one Generate stream message carries; None for an empty message."""
    kind = response.WhichOneof("event")
    if kind == "delta":
        d = response.delta
        return Delta(d.text, d.tokens, d.prompt_tokens, d.cached_prompt_tokens)
    if kind == "finished":
        return Finished(response.finished.finish_reason, usage(response.finished.usage))
    return None
