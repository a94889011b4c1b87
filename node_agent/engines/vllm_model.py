"""One model loaded in vLLM: its AsyncLLM, what vLLM reports of it, and its request streams.

vLLM runs the model in its own engine-core process; this side holds the AsyncLLM client, renders
and counts prompts with the model's tokenizer, and turns vLLM's delta outputs into our events.
Running and waiting counts and KV-cache usage are vLLM's own, from a stat logger it feeds every
scheduler step; the token counters are kept here, per request, so they add up to the usages.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from vllm.engine.arg_utils import AsyncEngineArgs
from vllm.sampling_params import RequestOutputKind, SamplingParams
from vllm.usage.usage_lib import UsageContext
from vllm.v1.engine.async_llm import AsyncLLM
from vllm.v1.engine.exceptions import EngineDeadError
from vllm.v1.metrics.loggers import StatLoggerBase

from node_agent.engines.base import LoadSpec
from node_agent.engines.common import check_prompt_length, render_prompt
from node_agent.engines.vllm_options import Plan
from node_agent.engines.vllm_stream import Tally
from node_agent.errors import AgentError, InvalidRequest, LoadFailed
from node_agent.types import Finished, GenerateEvent, GenerateRequest, ModelInfo, ModelStatus

logger = logging.getLogger(__name__)

_request_ids = itertools.count()
FINISH_REASONS = {"stop": "stop", "length": "length", "abort": "cancelled"}


class SchedulerView(StatLoggerBase):  # type: ignore[misc,unused-ignore]  # Any without vLLM
    """The latest scheduler numbers vLLM reported; it calls `record` after every step."""

    def __init__(self, vllm_config: Any = None, engine_index: int = 0) -> None:
        self.running = self.waiting = 0
        self.kv_cache_usage = 0.0

    def record(
        self,
        scheduler_stats: Any,
        iteration_stats: Any,
        mm_cache_stats: Any = None,
        engine_idx: int = 0,
    ) -> None:
        """Keep the running and waiting counts and the KV-cache usage."""
        if scheduler_stats is not None:
            self.running = scheduler_stats.num_running_reqs
            self.waiting = scheduler_stats.num_waiting_reqs
            self.kv_cache_usage = scheduler_stats.kv_cache_usage

    def log_engine_initialized(self) -> None:
        """Nothing to log: the agent logs the load itself."""

    def factory(self, vllm_config: Any, engine_index: int) -> SchedulerView:
        """vLLM's stat-logger factory: hand it this one view."""
        return self


@dataclass
class Counters:
    """A model's running totals, only ever growing."""

    generated_tokens: int = 0
    prompt_tokens: int = 0
    cached_prompt_tokens: int = 0
    prompt_cache_hits: int = 0
    requests_finished: int = 0
    busy_seconds: float = 0.0


class VllmModel:
    """One AsyncLLM serving one model under one name."""

    def __init__(self, *, info: ModelInfo, llm: AsyncLLM, view: SchedulerView, pace: float):
        self.info, self.llm, self.view = info, llm, view
        self.tokenizer = llm.get_tokenizer()
        self.counters = Counters()
        self._pace = pace  # tokens per second per request; 0: as fast as vLLM goes
        self._inflight: set[str] = set()
        self._busy_since: float | None = None

    @classmethod
    async def start(cls, spec: LoadSpec, plan: Plan, *, pace: float = 0.0) -> VllmModel:
        """Start vLLM's engine on the model (off the event loop: it takes seconds)."""
        view = SchedulerView()

        def build() -> AsyncLLM:
            args = AsyncEngineArgs(**plan.args, served_model_name=spec.name)
            config = args.create_engine_config(UsageContext.ENGINE_CONTEXT)
            return AsyncLLM.from_vllm_config(
                config, stat_loggers=[view.factory], disable_log_stats=True
            )

        try:
            llm = await asyncio.to_thread(build)
        except Exception as exc:  # vLLM raises anything from ValueError to RuntimeError
            raise LoadFailed(f"vLLM cannot load {spec.path}: {_reason(exc)}") from exc
        info = ModelInfo(
            name=spec.name,
            engine="vllm",
            source=spec.source,
            memory_bytes=plan.weights_bytes + kv_pool_bytes(llm, plan),
            context_length=int(llm.model_config.max_model_len),
        )
        return cls(info=info, llm=llm, view=view, pace=pace)

    async def generate(self, request: GenerateRequest) -> AsyncIterator[GenerateEvent]:
        """Deltas then one Finished; leaving early aborts the request in vLLM."""
        ids = render_prompt(self.tokenizer, request)
        check_prompt_length(len(ids), self.info.context_length)
        params = self._params(request, room=self.info.context_length - len(ids))
        rid = f"{request.request_id or 'request'}-{next(_request_ids)}"
        tally = Tally(prompt_tokens=len(ids), submitted_at=time.perf_counter())
        # Rendered by vLLM's renderer, as its v1 API asks: raw prompts are deprecated there.
        (prompt,) = self.llm.renderer.render_cmpl([{"prompt_token_ids": ids}])
        outputs = self.llm.generate(prompt, params, request_id=rid)
        self._enter(rid)
        try:
            async for out in outputs:
                await self._keep_pace(tally, len(out.outputs[0].token_ids))
                for event in self._events(tally, out):
                    yield event
                    if isinstance(event, Finished):
                        return
            yield tally.finish("cancelled")  # vLLM ended the stream: aborted by an unload
        except (AgentError, GeneratorExit, asyncio.CancelledError):
            raise
        except EngineDeadError as exc:
            raise AgentError(f"the vLLM engine of {self.info.name} died: {exc}") from exc
        except ValueError as exc:  # vLLM's own request validation
            raise InvalidRequest(f"vLLM refused the request: {exc}") from exc
        except Exception as exc:
            raise AgentError(f"generation failed: {_reason(exc)}") from exc
        finally:
            await outputs.aclose()  # vLLM aborts a request whose stream is closed unfinished
            self._leave(rid, tally)

    async def abort_all(self) -> None:
        """End every running request; each stream then finishes as cancelled."""
        if self._inflight:
            await self.llm.abort(list(self._inflight))

    async def shutdown(self) -> None:
        """Abort everything and stop vLLM's engine processes."""
        await self.abort_all()
        await asyncio.to_thread(self.llm.shutdown)

    def status(self) -> ModelStatus:
        """vLLM's scheduler numbers and our counters; safe to call at any time."""
        c, since, idle = self.counters, self._busy_since, not self._inflight
        return ModelStatus(
            model=self.info.name,
            running=0 if idle else self.view.running,
            waiting=0 if idle else self.view.waiting,
            generated_tokens=c.generated_tokens,
            prompt_tokens=c.prompt_tokens,
            cached_prompt_tokens=c.cached_prompt_tokens,
            prompt_cache_hits=c.prompt_cache_hits,
            requests_finished=c.requests_finished,
            memory_bytes=self.info.memory_bytes,
            busy_seconds=c.busy_seconds + (time.perf_counter() - since if since else 0.0),
            kv_cache_usage=self.view.kv_cache_usage,
        )

    def _params(self, request: GenerateRequest, *, room: int) -> SamplingParams:
        """vLLM's sampling parameters for one request, streaming deltas."""
        s = request.sampling
        try:
            return SamplingParams(
                max_tokens=min(s.max_tokens, room),
                temperature=s.temperature,
                top_p=s.top_p,
                stop=list(s.stop) or None,
                seed=s.seed,
                output_kind=RequestOutputKind.DELTA,
            )
        except ValueError as exc:
            raise InvalidRequest(f"vLLM refused the sampling values: {exc}") from exc

    def _events(self, tally: Tally, out: Any) -> list[GenerateEvent]:
        """What one of vLLM's outputs adds to the stream: a Delta, and Finished at the end."""
        if tally.outputs == 0:
            tally.cached_tokens = int(out.num_cached_tokens or 0)
        completion = out.outputs[0]
        self.counters.generated_tokens += len(completion.token_ids)
        events: list[GenerateEvent] = []
        delta = tally.push(completion.text, len(completion.token_ids))
        if delta is not None:
            events.append(delta)
        if out.finished:
            events.extend(tally.flush())
            events.append(tally.finish(FINISH_REASONS.get(completion.finish_reason, "stop")))
        return events

    async def _keep_pace(self, tally: Tally, new_tokens: int) -> None:
        """With a pace set, hold new tokens back until that pace would have made them (testing)."""
        if self._pace <= 0 or not new_tokens:
            return
        if tally.first_token_at is None:  # the pace counts from the first token, sent at once
            tally.first_token_at = time.perf_counter()
        due = tally.first_token_at + (tally.completion_tokens + new_tokens - 1) / self._pace
        await asyncio.sleep(max(0.0, due - time.perf_counter()))

    def _enter(self, rid: str) -> None:
        """Count a request in; the model is busy from its first request on."""
        if not self._inflight:
            self._busy_since = time.perf_counter()
        self._inflight.add(rid)

    def _leave(self, rid: str, tally: Tally) -> None:
        """Count a request out, with its prompt numbers; idle again after the last one."""
        self._inflight.discard(rid)
        c = self.counters
        c.requests_finished += 1
        c.prompt_tokens += tally.prompt_tokens
        c.cached_prompt_tokens += tally.cached_tokens
        c.prompt_cache_hits += 1 if tally.cached_tokens else 0
        if not self._inflight and self._busy_since is not None:
            c.busy_seconds += time.perf_counter() - self._busy_since
            self._busy_since = None


def kv_pool_bytes(llm: AsyncLLM, plan: Plan) -> int:
    """Bytes of the KV-cache pool vLLM allocated: its blocks times what a token takes."""
    config = llm.vllm_config
    try:
        mc, pc, cc = config.model_config, config.parallel_config, config.cache_config
        layers = mc.get_num_layers(pc) * pc.pipeline_parallel_size
        heads = mc.get_num_kv_heads(pc) * pc.tensor_parallel_size
        # The model's dtype is a torch dtype once vLLM has resolved it (its type says str too).
        itemsize = 1 if str(cc.cache_dtype).startswith("fp8") else getattr(mc.dtype, "itemsize", 2)
        per_token = 2 * layers * heads * mc.get_head_size() * itemsize
        return int(cc.num_gpu_blocks or 0) * int(cc.block_size) * int(per_token)
    except Exception:  # a model without a plain KV cache: fall back to what was asked for
        logger.warning("cannot size the KV-cache pool of %s", plan.args["model"], exc_info=True)
        return int(plan.kv_cache_bytes or 0)


def _reason(exc: BaseException) -> str:
    """One line from an exception, with its cause when vLLM wraps one."""
    text = str(exc).strip().splitlines()
    line = f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__
    cause = exc.__cause__
    return f"{line} ({_reason(cause)})" if cause is not None else line
