"""The MLX engine's knobs: how many streams one model batches and how much prompt cache it keeps.

Options come as strings from `--engine-option KEY=VALUE` (`tool_parser`, which a load may also
give, is split off before these: parsing.tool_parser_option). The prompt cache matters most on
a small machine: each entry holds a conversation's KV cache (half a GiB for 4k tokens of a 7B
model), so a Mac mini may want fewer bytes than the default, and a big one more entries.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping

from node_agent.engines.mlx_slot import BatchLimits
from node_agent.engines.vllm_options import positive_int, size_bytes
from node_agent.errors import InvalidRequest

OPTIONS: dict[str, tuple[str, Callable[[str], int]]] = {
    "max_batch": ("max_batch", positive_int),
    "prompt_cache_entries": ("cache_entries", positive_int),
    "prompt_cache_bytes": ("cache_bytes", size_bytes),
}


def batch_limits(options: Mapping[str, str], base: BatchLimits | None = None) -> BatchLimits:
    """`base` (default limits) with `options` applied; InvalidRequest names a bad one."""
    changes: dict[str, int] = {}
    for key, text in options.items():
        if key not in OPTIONS:
            known = ", ".join(sorted(OPTIONS))
            raise InvalidRequest(f"unknown MLX option {key!r}; known: {known}")
        field, parse = OPTIONS[key]
        try:
            changes[field] = parse(text)
        except ValueError as exc:
            raise InvalidRequest(f"MLX option {key}: {exc}") from None
    return dataclasses.replace(base or BatchLimits(), **changes)
