"""The vLLM engine's knobs: which options it takes, how they are parsed, what they reserve.

Options come as strings (`--engine-option KEY=VALUE` at start, `LoadModelRequest.options` per
load); a load's options override the agent's. Names are vLLM's own engine arguments, so its
documentation applies; the one of ours, `tool_parser`, is split off before these (see
parsing.tool_parser_option). Nothing here imports vLLM: bad options fail before any engine starts.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from node_agent.errors import InvalidRequest, OutOfMemory
from node_agent.hardware import Memory
from node_agent.models import is_decoder, model_weights_bytes

# On the CPU backend vLLM otherwise reserves 92% of the memory node for its KV cache, which no
# machine that also runs anything else has free.
CPU_KV_CACHE_BYTES = 512 << 20
WEIGHTS_OVERHEAD = 1.2  # activations and allocator slack on top of the weights
VLLM_GPU_MEMORY_UTILIZATION = 0.92  # vLLM's default share of each GPU it takes
DTYPES = ("auto", "bfloat16", "float16", "float32", "half", "float")
# `pooling` starts the model to make embeddings (normalised; see Plan.mean_pooled) and nothing
# else: vLLM pools only on a pooling runner, and a second load of the same weights to generate
# too would double their memory. So a node that should do both loads the model twice, by choice.
RUNNERS = ("generate", "pooling")
_SIZE = re.compile(r"^\s*(\d+)\s*([KMGT]i?B?)?\s*$", re.IGNORECASE)


def fraction(text: str) -> float:
    """A number in (0, 1]."""
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"{text!r} is not a number") from None
    if not 0 < value <= 1:
        raise ValueError(f"{text!r} must be in (0, 1]")
    return value


def positive_int(text: str) -> int:
    """A whole number above zero."""
    try:
        value = int(text)
    except ValueError:
        raise ValueError(f"{text!r} is not a whole number") from None
    if value <= 0:
        raise ValueError(f"{text!r} must be above zero")
    return value


def size_bytes(text: str) -> int:
    """Bytes, plain or with a binary suffix: 536870912, 512MiB, 2G."""
    match = _SIZE.match(text)
    if match is None:
        raise ValueError(f"{text!r} is not a size (bytes, or a number with KiB, MiB, GiB, TiB)")
    shift = {"": 0, "K": 10, "M": 20, "G": 30, "T": 40}[(match[2] or "")[:1].upper()]
    value = int(match[1]) << shift
    if value <= 0:
        raise ValueError(f"{text!r} must be above zero")
    return value


def boolean(text: str) -> bool:
    """true/false, 1/0, yes/no, on/off."""
    lowered = text.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"{text!r} is not a yes/no value")


def dtype(text: str) -> str:
    """One of vLLM's model dtypes."""
    if text not in DTYPES:
        raise ValueError(f"{text!r} is not one of {', '.join(DTYPES)}")
    return text


def runner(text: str) -> str:
    """One of the vLLM runners a model may be started on."""
    if text not in RUNNERS:
        raise ValueError(f"{text!r} is not one of {', '.join(RUNNERS)}")
    return text


OPTIONS: dict[str, Callable[[str], Any]] = {
    "gpu_memory_utilization": fraction,
    "kv_cache_memory_bytes": size_bytes,
    "max_model_len": positive_int,
    "tensor_parallel_size": positive_int,
    "dtype": dtype,
    "enforce_eager": boolean,
    "block_size": positive_int,
    "max_num_seqs": positive_int,
    "enable_prefix_caching": boolean,
    "quantization": str,
    "runner": runner,
}


def parse_options(raw: Mapping[str, str]) -> dict[str, Any]:
    """Typed options from strings; InvalidRequest names the first bad one."""
    parsed = {}
    for key, text in raw.items():
        parse = OPTIONS.get(key)
        if parse is None:
            raise InvalidRequest(
                f"unknown vLLM option {key!r}; the options are {', '.join(sorted(OPTIONS))}"
            )
        try:
            parsed[key] = parse(text)
        except ValueError as exc:
            raise InvalidRequest(f"vLLM option {key}: {exc}") from None
    return parsed


@dataclass(frozen=True, kw_only=True)
class Plan:
    """The engine arguments of one load and the memory it will reserve."""

    args: dict[str, Any]
    weights_bytes: int
    # A decoder started to pool is mean-pooled, as MLX pools; an embedding model (bge's CLS,
    # say) keeps the pooler its files name.
    mean_pooled: bool = False

    @property
    def pooling(self) -> bool:
        """Whether the model is started to make embeddings instead of text."""
        return bool(self.args.get("runner") == "pooling")

    @property
    def kv_cache_bytes(self) -> int | None:
        """The KV-cache pool asked for; None when vLLM sizes it from its memory share."""
        value = self.args.get("kv_cache_memory_bytes")
        return int(value) if value is not None else None


def plan(path: Path, context_length: int, options: Mapping[str, Any], *, on_cpu: bool) -> Plan:
    """vLLM engine arguments for a model directory: our defaults, then the options."""
    args: dict[str, Any] = {"enable_prefix_caching": True}
    if on_cpu:
        # Compilation adds 15-40 s to every start on a small CPU; eager is the better trade for
        # the test and demo nodes that run vLLM on a CPU.
        args["enforce_eager"] = True
        if "gpu_memory_utilization" not in options:
            args["kv_cache_memory_bytes"] = CPU_KV_CACHE_BYTES
    args |= options
    if context_length:  # the load's own context length wins over the agent's max_model_len
        args["max_model_len"] = context_length
    args |= {"model": str(path), "tokenizer": str(path), "disable_log_stats": True}
    pooled = args.get("runner") == "pooling"
    return Plan(
        args=args,
        weights_bytes=model_weights_bytes(path),
        mean_pooled=pooled and is_decoder(path),
    )


def check_cpu_fit(plan: Plan, *, name: str, memory: Memory) -> None:
    """OutOfMemory unless the weights and the KV pool fit in the memory available now."""
    weights = int(plan.weights_bytes * WEIGHTS_OVERHEAD)
    kv = plan.kv_cache_bytes
    if kv is None:  # vLLM reserves this share of the machine's memory for everything
        need = int(plan.args["gpu_memory_utilization"] * memory.total)
    else:
        need = weights + kv
    if need > memory.available:
        raise OutOfMemory(
            f"{name} needs about {_gib(need)} (weights and KV cache); "
            f"{_gib(memory.available)} are available"
        )


def check_gpu_fit(plan: Plan, *, name: str, gpus: tuple[Memory, ...]) -> None:
    """OutOfMemory unless each GPU the model spans has what vLLM will reserve on it free."""
    tp = int(plan.args.get("tensor_parallel_size", 1))
    if tp > len(gpus):
        raise InvalidRequest(f"tensor_parallel_size is {tp}, but this node has {len(gpus)} GPUs")
    weights = int(plan.weights_bytes * WEIGHTS_OVERHEAD) // tp
    share = float(plan.args.get("gpu_memory_utilization", VLLM_GPU_MEMORY_UTILIZATION))
    kv = plan.kv_cache_bytes
    for i, gpu in enumerate(gpus[:tp]):
        need = weights + kv // tp if kv is not None else int(share * gpu.total)
        if need > gpu.available:
            raise OutOfMemory(
                f"{name} would reserve {_gib(need)} on GPU {i}; {_gib(gpu.available)} are free"
            )
        if kv is None and weights > need:
            raise OutOfMemory(
                f"{name}'s weights need about {_gib(weights)} per GPU; vLLM's "
                f"share of GPU {i} (gpu_memory_utilization {share}) is {_gib(need)}"
            )


def _gib(n: int) -> str:
    """Bytes as GiB for a message, with the exact count."""
    return f"{n / 2**30:.2f} GiB ({n} bytes)"
