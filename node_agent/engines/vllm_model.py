"""One model loaded in vLLM: its AsyncLLM, what vLLM reports of it, and its request streams.

vLLM runs the model in its own engine-core process; this side holds the AsyncLLM client, renders
and counts prompts with the model's tokenizer (tools and template options included), holds a
request to its grammar through vLLM's `guidance` structured outputs (vllm_grammar), and turns
vLLM's delta outputs into our events (vllm_stream: answer, reasoning, tool calls, logprobs).
A model started on vLLM's pooling runner (the load option `runner=pooling`) makes embeddings
instead, with a mean pooler that normalises, as MLX makes them; it generates nothing.
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

from vllm.config import PoolerConfig, StructuredOutputsConfig
from vllm.engine.arg_utils import AsyncEngineArgs
from vllm.exceptions import VLLMValidationError
from vllm.pooling_params import PoolingParams
from vllm.sampling_params import RequestOutputKind, SamplingParams, StructuredOutputsParams
from vllm.usage.usage_lib import UsageContext
from vllm.v1.engine.async_llm import AsyncLLM
from vllm.v1.engine.exceptions import EngineDeadError
from vllm.v1.metrics.loggers import StatLoggerBase

from node_agent.engines.base import LoadSpec
from node_agent.engines.common import check_prompt_length, render_prompt
from node_agent.engines.parsing import (
    Dialect,
    OutputParser,
    capabilities,
    dialect_of,
    starts_in_reasoning,
)
from node_agent.engines.vllm_grammar import Grammars
from node_agent.engines.vllm_options import Plan
from node_agent.engines.vllm_stream import Tally, token_logprobs
from node_agent.errors import AgentError, InvalidRequest, LoadFailed
from node_agent.types import (
    CONSTRAINTS,
    EMBEDDINGS,
    LOGPROBS,
    Finished,
    GenerateEvent,
    GenerateRequest,
    ModelInfo,
    ModelStatus,
)

logger = logging.getLogger(__name__)

_request_ids = itertools.count()
FINISH_REASONS = {"stop": "stop", "length": "length", "abort": "cancelled"}
MAX_TOP_LOGPROBS = 20  # vLLM's default max_logprobs
PROMPT_TAIL = 16  # tokens of the prompt that tell whether it opens a think block


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

    def __init__(
        self,
        *,
        info: ModelInfo,
        llm: AsyncLLM,
        view: SchedulerView,
        pace: float,
        dialect: Dialect | None = None,
        grammars: Grammars | None = None,
    ):
        self.info, self.llm, self.view = info, llm, view
        self.tokenizer = llm.get_tokenizer()
        self.dialect = dialect or Dialect()
        self.grammars = grammars  # None: this model cannot be held to a grammar
        self.counters = Counters()
        self._pace = pace  # tokens per second per request; 0: as fast as vLLM goes
        self._inflight: set[str] = set()
        self._busy_since: float | None = None

    @classmethod
    async def start(
        cls, spec: LoadSpec, plan: Plan, *, pace: float = 0.0, tool_parser: str = ""
    ) -> VllmModel:
        """Start vLLM's engine on the model (off the event loop: it takes seconds);
        `tool_parser` overrides the family the tokenizer implies ("none": no calls)."""
        view = SchedulerView()

        # Normalised either way (use_activation's default); a decoder mean-pooled, as on MLX.
        pooler = PoolerConfig(pooling_type="MEAN") if plan.mean_pooled else None

        def build() -> AsyncLLM:
            args = AsyncEngineArgs(
                **plan.args,
                pooler_config=pooler,
                served_model_name=spec.name,
                # llguidance, as on MLX: it reads the Lark grammars engines/grammar.py writes.
                structured_outputs_config=StructuredOutputsConfig(backend="guidance"),
            )
            config = args.create_engine_config(UsageContext.ENGINE_CONTEXT)
            return AsyncLLM.from_vllm_config(
                config, stat_loggers=[view.factory], disable_log_stats=True
            )

        try:
            llm = await asyncio.to_thread(build)
        except Exception as exc:  # vLLM raises anything from ValueError to RuntimeError
            raise LoadFailed(f"vLLM cannot load {spec.path}: {_reason(exc)}") from exc
        tokenizer = llm.get_tokenizer()
        dialect = _dialect(tokenizer, tool_parser)
        grammars = _grammars(tokenizer, int(llm.model_config.get_vocab_size()), dialect)
        info = ModelInfo(
            name=spec.name,
            engine="vllm",
            source=spec.source,
            memory_bytes=plan.weights_bytes + kv_pool_bytes(llm, plan),
            context_length=int(llm.model_config.max_model_len),
            capabilities=(
                frozenset({EMBEDDINGS})
                if plan.pooling
                else _capabilities(tokenizer, dialect, grammars)
            ),
        )
        return cls(info=info, llm=llm, view=view, pace=pace, dialect=dialect, grammars=grammars)

    async def generate(self, request: GenerateRequest) -> AsyncIterator[GenerateEvent]:
        """Answer, reasoning and call events then one Finished; leaving early aborts in vLLM."""
        submitted_at = time.perf_counter()  # compiling the grammar is part of the TTFT
        structured = await self._structured(request)
        # Off the event loop: a long prompt takes seconds to render, and the loop also serves
        # the status stream the controller counts the node lost without (after 2 s).
        ids = await asyncio.to_thread(
            render_prompt, self.tokenizer, request, constrained=structured is not None
        )
        check_prompt_length(len(ids), self.info.context_length)
        parser = self._parser(request, ids)
        params = self._params(
            request,
            room=self.info.context_length - len(ids),
            structured=structured,
            markers=parser is not None,
        )
        rid = f"{request.request_id or 'request'}-{next(_request_ids)}"
        tally = Tally(
            prompt_tokens=len(ids),
            submitted_at=submitted_at,
            parser=parser,
            stops=request.sampling.stop,
        )
        # Rendered by vLLM's renderer, as its v1 API asks: raw prompts are deprecated there.
        (prompt,) = self.llm.renderer.render_cmpl([{"prompt_token_ids": ids}])
        outputs = self.llm.generate(prompt, params, request_id=rid)
        self._enter(rid)
        try:
            async for out in outputs:
                await self._keep_pace(tally, len(out.outputs[0].token_ids))
                for event in self._events(tally, out, request.top_logprobs):
                    yield event
                    if isinstance(event, Finished):
                        return
            yield tally.finish("cancelled")  # vLLM ended the stream: aborted by an unload
        except (AgentError, GeneratorExit, asyncio.CancelledError):
            raise
        except EngineDeadError as exc:
            raise AgentError(f"the vLLM engine of {self.info.name} died: {exc}") from exc
        except (ValueError, VLLMValidationError) as exc:  # vLLM's own request validation
            raise InvalidRequest(f"vLLM refused the request: {exc}") from exc
        except Exception as exc:
            raise AgentError(f"generation failed: {_reason(exc)}") from exc
        finally:
            await outputs.aclose()  # vLLM aborts a request whose stream is closed unfinished
            self._leave(rid, tally.prompt_tokens, tally.cached_tokens)

    @property
    def pooling(self) -> bool:
        """Whether this model makes embeddings (vLLM's pooling runner) rather than text."""
        return EMBEDDINGS in self.info.capabilities

    async def embed(self, inputs: list[list[int]]) -> list[list[float]]:
        """One embedding per tokenised input, all sent at once so vLLM batches them."""
        base = f"embed-{next(_request_ids)}"
        rids = [f"{base}-{i}" for i in range(len(inputs))]
        for rid in rids:
            self._enter(rid)
        try:
            return list(await asyncio.gather(*map(self._pool, rids, inputs)))
        except (AgentError, asyncio.CancelledError):
            raise
        except EngineDeadError as exc:
            raise AgentError(f"the vLLM engine of {self.info.name} died: {exc}") from exc
        except (ValueError, VLLMValidationError) as exc:
            raise InvalidRequest(f"vLLM refused the inputs: {exc}") from exc
        except Exception as exc:
            raise AgentError(f"embedding failed: {_reason(exc)}") from exc
        finally:
            for rid, ids in zip(rids, inputs, strict=True):
                self._leave(rid, prompt_tokens=len(ids))

    async def _pool(self, rid: str, ids: list[int]) -> list[float]:
        """The embedding of one input; vLLM aborts it if this is cancelled."""
        (prompt,) = self.llm.renderer.render_cmpl([{"prompt_token_ids": ids}])
        async for out in self.llm.encode(prompt, PoolingParams(task="embed"), request_id=rid):
            if out.finished:
                return [float(x) for x in out.outputs.data.tolist()]
        raise AgentError("the embedding was cancelled")  # aborted by an unload

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
            capabilities=self.info.capabilities,
        )

    async def _structured(self, request: GenerateRequest) -> StructuredOutputsParams | None:
        """The request's grammar as vLLM's structured output, compiled off the event loop."""
        if self.grammars is None:
            if CONSTRAINTS in request.needs():
                raise InvalidRequest("this model cannot be held to a grammar on this node")
            return None  # strict tools in auto: parsed, not enforced
        grammar = self.grammars.grammar(request)
        return None if grammar is None else await asyncio.to_thread(self.grammars.check, grammar)

    def _parser(self, request: GenerateRequest, prompt: list[int]) -> OutputParser | None:
        """A chat's output parser in the model's dialect; None for raw text or a plain model."""
        d = self.dialect
        if request.messages is None or not (d.think or d.calls):
            return None
        tail = self.tokenizer.decode(prompt[-PROMPT_TAIL:])
        reasoning = starts_in_reasoning(d, tail)
        return OutputParser(d, tools=request.tools, reasoning=reasoning)

    def _params(
        self,
        request: GenerateRequest,
        *,
        room: int,
        structured: StructuredOutputsParams | None = None,
        markers: bool = False,
    ) -> SamplingParams:
        """vLLM's sampling parameters for one request, streaming deltas.

        `markers`: the output is parsed for think and call markers, which some vocabularies make
        special tokens; vLLM must then keep special tokens in the text.
        """
        s, k = request.sampling, request.top_logprobs
        if k is not None and not 0 <= k <= MAX_TOP_LOGPROBS:
            raise InvalidRequest(f"top_logprobs must be between 0 and {MAX_TOP_LOGPROBS}")
        try:
            return SamplingParams(
                max_tokens=min(s.max_tokens, room),
                temperature=s.temperature,
                top_p=s.top_p,
                seed=s.seed,
                logprobs=k,
                structured_outputs=structured,
                skip_special_tokens=not markers,
                output_kind=RequestOutputKind.DELTA,
            )
        except (ValueError, VLLMValidationError) as exc:
            raise InvalidRequest(f"vLLM refused the sampling values: {exc}") from exc

    def _events(self, tally: Tally, out: Any, top_logprobs: int | None) -> list[GenerateEvent]:
        """What one of vLLM's outputs adds to the stream; Finished at its end or at a stop."""
        if tally.outputs == 0:
            tally.cached_tokens = int(out.num_cached_tokens or 0)
        completion = out.outputs[0]
        new = list(completion.token_ids)
        self.counters.generated_tokens += len(new)
        logprobs = (
            token_logprobs(new, completion.logprobs or (), top_logprobs, self._token_bytes)
            if top_logprobs is not None
            else []
        )
        events: list[GenerateEvent] = list(tally.push(completion.text, len(new), logprobs))
        if out.finished or tally.stopped:  # at a stop string: closing the stream aborts it
            events.extend(tally.flush())
            events.append(tally.finish(FINISH_REASONS.get(completion.finish_reason, "stop")))
        return events

    def _token_bytes(self, token: int) -> bytes:
        """A token's bytes, for logprobs: as the vocabulary holds them, or as it decodes."""
        if self.grammars is not None:
            return self.grammars.token_bytes(token)
        return str(self.tokenizer.decode([token])).encode()

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

    def _leave(self, rid: str, prompt_tokens: int, cached_tokens: int = 0) -> None:
        """Count a request out, with its prompt numbers; idle again after the last one."""
        self._inflight.discard(rid)
        c = self.counters
        c.requests_finished += 1
        c.prompt_tokens += prompt_tokens
        c.cached_prompt_tokens += cached_tokens
        c.prompt_cache_hits += 1 if cached_tokens else 0
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


def _dialect(tokenizer: Any, tool_parser: str = "") -> Dialect:
    """How the model marks reasoning and tool calls; plain text where that cannot be read."""
    try:
        return dialect_of(tokenizer, tool_parser)
    except Exception as exc:  # parsing.py reads the families with mlx-lm: ImportError without
        logger.warning("vllm: no tool or reasoning parsing for this model: %s", exc)
        return Dialect()


def _grammars(tokenizer: Any, width: int, dialect: Dialect) -> Grammars | None:
    """The model's grammars; None (and no CONSTRAINTS) where llguidance cannot serve it."""
    try:
        return Grammars(tokenizer, width=width, dialect=dialect)
    except Exception as exc:  # a slow tokenizer, a vocabulary llguidance cannot read
        logger.warning("vllm: no constrained decoding for this model: %s", exc)
        return None


def _capabilities(tokenizer: Any, dialect: Dialect, grammars: Grammars | None) -> frozenset[str]:
    """What the loaded model can serve beyond plain text."""
    extra = {LOGPROBS} | ({CONSTRAINTS} if grammars is not None else set())
    return capabilities(tokenizer, dialect) | extra


def _reason(exc: BaseException) -> str:
    """One line from an exception, with its cause when vLLM wraps one."""
    text = str(exc).strip().splitlines()
    line = f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__
    cause = exc.__cause__
    return f"{line} ({_reason(cause)})" if cause is not None else line
