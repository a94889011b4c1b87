"""Embeddings from an MLX generation model: its decoder's final hidden states, mean-pooled.

The body of an mlx-lm model (`model.model`: the layers and the final norm, without the lm_head)
gives one hidden state per token; an input's embedding is their mean, L2-normalised. Inputs run
a chunk at a time through a fresh KV cache, on the worker thread between decode steps, so a long
input holds the running generations up no longer than a prefill chunk does. Each input runs on
its own, never padded into a batch: its vector does not depend on what it was sent with.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import mlx.core as mx
from mlx_lm.models.cache import make_prompt_cache

NORM_FLOOR = 1e-12  # a zero vector stays zero rather than dividing by zero


def body_of(model: Any) -> Any | None:
    """The model's decoder without its lm_head, or None where mlx-lm's layout does not show it."""
    body = getattr(model, "model", None)
    return body if callable(body) else None


def mean_normalized(total: mx.array, count: int) -> mx.array:
    """The mean of `count` vectors whose sum is `total`, scaled to unit length."""
    mean = total / count
    return mean / mx.maximum(mx.linalg.norm(mean), NORM_FLOOR)


class Embedding:
    """One Embed command in progress: its inputs' vectors so far, and where the current one is."""

    def __init__(self, model: Any, inputs: Sequence[Sequence[int]], *, chunk: int) -> None:
        self._model, self._body = model, body_of(model)
        self._inputs, self._chunk = inputs, chunk
        self.vectors: list[list[float]] = []
        self._at = 0  # tokens of the current input already run
        self._cache: list[Any] = []
        self._total: mx.array | None = None

    @property
    def done(self) -> bool:
        """Whether every input has its vector."""
        return len(self.vectors) == len(self._inputs)

    def step(self, budget: int) -> None:
        """Run about `budget` tokens (at least one chunk) of the inputs left through the body."""
        spent = 0
        while not self.done and spent < budget:
            spent += self._run_chunk()

    def _run_chunk(self) -> int:
        """The next chunk of the current input; its vector once its last chunk has run."""
        if self._body is None:
            raise ValueError("this model's decoder is not reachable for embeddings")
        ids = self._inputs[len(self.vectors)]
        if self._at == 0:
            self._cache = make_prompt_cache(self._model)
        chunk = ids[self._at : self._at + self._chunk]
        hidden = self._body(mx.array(list(chunk))[None], cache=self._cache)
        part = hidden[0].astype(mx.float32).sum(axis=0)
        total = part if self._total is None else self._total + part
        mx.eval(total)  # also materialises the cache the next chunk attends to
        self._total, self._at = total, self._at + len(chunk)
        if self._at == len(ids):
            vector: list[float] = mean_normalized(total, len(ids)).tolist()  # type: ignore[assignment]
            self.vectors.append(vector)
            self._at, self._cache, self._total = 0, [], None
        return len(chunk)
