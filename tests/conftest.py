"""Fixtures shared by every test suite."""

from __future__ import annotations

from pathlib import Path

import pytest

from node_agent.demo_model import ensure_demo_model


@pytest.fixture(scope="session")
def demo_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The generated `demo` model, built once per test session in a temporary data dir."""
    return ensure_demo_model(tmp_path_factory.mktemp("data"))
