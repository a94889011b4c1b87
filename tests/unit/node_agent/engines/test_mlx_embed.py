"""MLX embeddings' pooling (engines/mlx_embed.py): the mean of the hidden states, unit length,
the same however the input is cut into chunks. The model is a stand-in whose hidden state for a
token is a fixed row, so the expected vector is plain arithmetic; the demo model's embeddings
are checked end to end in tests/integration/test_embeddings.py."""

from __future__ import annotations

from typing import Any

import mlx.core as mx
import pytest

from node_agent.engines.mlx_embed import Embedding, body_of, mean_normalized

ROWS = mx.array([[3.0, 0.0, 0.0], [0.0, 4.0, 0.0], [1.0, 1.0, 1.0], [0.0, 0.0, 2.0]])


class Body:
    """Each token's hidden state is its row of ROWS; records the chunks it was given."""

    def __init__(self) -> None:
        self.chunks: list[list[int]] = []

    def __call__(self, ids: mx.array, cache: Any = None) -> mx.array:
        self.chunks.append(ids[0].tolist())  # type: ignore[arg-type]
        return ROWS[ids]


class Model:
    """An mlx-lm model's shape: a body under `.model`, and its own cache."""

    def __init__(self) -> None:
        self.model = Body()

    def make_cache(self) -> list[Any]:
        return []


def expected(ids: list[int]) -> list[float]:
    mean = [sum(float(ROWS[i][k].item()) for i in ids) / len(ids) for k in range(3)]
    norm = sum(x * x for x in mean) ** 0.5
    return [x / norm for x in mean]


def test_mean_normalized_is_the_unit_mean() -> None:
    got = mean_normalized(mx.array([6.0, 8.0]), 2).tolist()
    assert got == pytest.approx([0.6, 0.8])
    assert mean_normalized(mx.zeros((3,)), 1).tolist() == [0.0, 0.0, 0.0]


@pytest.mark.parametrize("chunk", [1, 2, 512])
def test_each_input_is_pooled_alone_whatever_the_chunk(chunk: int) -> None:
    model = Model()
    inputs = [[0, 1, 2], [3], [0, 1, 2]]
    job = Embedding(model, inputs, chunk=chunk)
    while not job.done:
        job.step(chunk)
    assert len(job.vectors) == 3 and job.vectors[0] == job.vectors[2]
    for vector, ids in zip(job.vectors, inputs, strict=True):
        assert vector == pytest.approx(expected(ids), abs=1e-6)
    assert all(len(c) <= chunk for c in model.model.chunks)


def test_a_step_spends_about_its_budget() -> None:
    job = Embedding(Model(), [[0, 1, 2, 3], [1], [2]], chunk=2)
    job.step(2)
    assert len(job.vectors) == 0  # half of the first input
    job.step(3)
    assert len(job.vectors) == 2 and not job.done


def test_a_model_without_a_reachable_body_makes_none() -> None:
    assert body_of(object()) is None and body_of(Model()) is not None
