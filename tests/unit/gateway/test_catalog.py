"""`GET /v1/models` in OpenAI's shape: models rented from a provider are listed after the rest."""

from __future__ import annotations

from cluster.gateway import catalog
from cluster.types import NodeTable


def test_rented_models_are_listed_with_their_provider() -> None:
    listed = catalog.openai_list(NodeTable(), [], 7, {}, {"gpt-x": "cloud", "gpt-a": "other"})
    assert [(c["id"], c["rented_from"], c["created"]) for c in listed["data"]] == [
        ("gpt-a", "other", 7),
        ("gpt-x", "cloud", 7),
    ]


def test_a_model_a_node_serves_is_not_listed_twice() -> None:
    listed = catalog.openai_list(NodeTable(), ["demo"], 7, {}, {"demo": "cloud"})
    assert [c["id"] for c in listed["data"]] == ["demo"]
    assert "rented_from" not in listed["data"][0]
