"""`GET /v1/models`: the models the cluster serves, with what their nodes can do and what
their tokens cost, and their exact aliases, in OpenAI's list shape or Anthropic's.

Pure: built from the node table the replica was pushed and the ledger's figures.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from cluster.deployments.aliases import listed_aliases
from cluster.gateway.anthropic import encode as anthropic_encode
from cluster.gateway.openai.encode import model_card, model_list
from cluster.types import ModelName, NodeTable


def model_card_for(
    table: NodeTable, model: ModelName, created: int, usd_per_mtok: float | None = None
) -> dict[str, Any]:
    """The model's `/v1/models` entry: what the ready nodes serving it advertise, together (a
    request needing a capability goes to a node that has it), and its measured $/Mtok."""
    traits = [n.model_traits(model) for n in table.nodes if n.routable and model in n.models]
    return model_card(
        model,
        created=created,
        capabilities=set().union(*(t.capabilities for t in traits)),
        engines={t.engine for t in traits if t.engine},
        context_length=min((t.context_length for t in traits if t.context_length), default=0),
        usd_per_mtok=usd_per_mtok,
    )


def openai_list(
    table: NodeTable,
    models: Sequence[str],
    created: int,
    prices: Mapping[str, float],
    rented: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """OpenAI's list: each model's card, then each exact alias under the target's card, then
    each model rented from a provider (`rented`: model -> provider) that no node serves."""
    cards = [model_card_for(table, ModelName(m), created, prices.get(m)) for m in models]
    for a in listed_aliases(table, models):
        card = model_card_for(table, a.target, created, prices.get(a.target))
        cards.append({**card, "id": a.name, "alias_of": a.target})
    for m, provider in sorted((rented or {}).items()):
        if m not in models:
            cards.append({**model_card(m, created=created), "rented_from": provider})
    return model_list(cards)


def anthropic_list(table: NodeTable, models: Sequence[str], created: int) -> dict[str, Any]:
    """Anthropic's list (what Claude Code's model discovery reads): the models, then aliases."""
    ids = [*models, *(a.name for a in listed_aliases(table, models))]
    return anthropic_encode.model_list(ids, created)
