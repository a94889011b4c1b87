"""Short full collections in a node agent.

An agent's heap is large and lives as long as the agent: the engine's libraries, a tokenizer,
the model's modules. With the demo model that is some 360,000 objects, and each of Python's full
collections walks all of them, holding the GIL: 100 to 170 ms here, while every stream on the
node waits. One came in the middle of a benchmark run (bench/gateway.py) and put 110 ms on the
first token of half a burst's requests.

`settle` puts what is alive once a model has been loaded or unloaded out of the collector's
reach (gc.freeze), so that a full collection walks only what came after; an agent without a
model generates nothing, so nothing waits on its collections. Settling costs one long
collection: after a load it comes before the model is reported ready, so none of its requests
wait on it; an unload, rare and already slow, pays it beside the engine's own collection (the
MLX engine collects before it clears its cache). An unload must `thaw` first: a frozen object is
never collected, and only the collector frees reference cycles, which a model's modules may
hold.
"""

from __future__ import annotations

import gc


def settle() -> None:
    """Collect everything, then freeze what is left."""
    gc.unfreeze()
    gc.collect()
    gc.freeze()


def thaw() -> None:
    """Give every frozen object back to the collector, before something large is freed."""
    gc.unfreeze()
