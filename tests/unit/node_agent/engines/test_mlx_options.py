"""The MLX engine's options: parsed before anything starts, bad ones named."""

from __future__ import annotations

import pytest

from node_agent.engines.mlx_options import batch_limits
from node_agent.engines.mlx_slot import BatchLimits
from node_agent.errors import InvalidRequest


def test_options_set_the_batch_and_prompt_cache_limits() -> None:
    got = batch_limits(
        {"max_batch": "8", "prompt_cache_entries": "4", "prompt_cache_bytes": "256MiB"}
    )
    assert (got.max_batch, got.cache_entries, got.cache_bytes) == (8, 4, 256 << 20)
    assert got.prefill_step == BatchLimits().prefill_step  # the rest keep their defaults


def test_no_options_keep_the_given_limits() -> None:
    base = BatchLimits(max_batch=3)
    assert batch_limits({}, base) is not None and batch_limits({}, base) == base


@pytest.mark.parametrize(
    ("options", "needle"),
    [
        ({"gpu_memory_utilization": "0.5"}, "unknown MLX option 'gpu_memory_utilization'"),
        ({"prompt_cache_entries": "0"}, "prompt_cache_entries: '0' must be above zero"),
        ({"prompt_cache_bytes": "lots"}, "prompt_cache_bytes: 'lots' is not a size"),
    ],
)
def test_bad_options_are_named(options: dict[str, str], needle: str) -> None:
    with pytest.raises(InvalidRequest, match=needle):
        batch_limits(options)
