"""The admin API's routes (gateway/admin.py): how an admin call names a node."""

from __future__ import annotations

import pytest

from cluster.errors import NotFound
from cluster.gateway.admin import find_node
from cluster.types import NodeId, NodeState, NodeTable, NodeView


def test_a_node_is_found_by_exact_name_before_an_id_prefix() -> None:
    def view(node_id: str, name: str) -> NodeView:
        return NodeView(
            node_id=NodeId(node_id),
            name=name,
            address="h:1",
            engines=("mlx",),
            state=NodeState.READY,
            models=(),
        )

    t = NodeTable(version=1, nodes=(view("a3c27f00", "a1"), view("9b10ee00", "a3")))
    assert find_node(t, "a3").name == "a3"  # its name, though a1's id starts with "a3"
    assert find_node(t, "a3c2").name == "a1"  # an id prefix still works
    assert find_node(t, "9b10ee00").name == "a3"
    with pytest.raises(NotFound, match="unknown node 'zz'"):
        find_node(t, "zz")


def test_a_node_with_model_traits_is_plain_json() -> None:
    import json

    from cluster.gateway.admin import node_json
    from cluster.types import ModelName, ModelTraits, NodeId, NodeState, NodeView

    traits = ModelTraits(capabilities=frozenset({"tools", "constraints"}), context_length=32768)
    node = NodeView(
        node_id=NodeId("n1"),
        name="n1",
        address="n1:1",
        engines=("mlx",),
        state=NodeState.READY,
        models=(ModelName("demo"),),
        traits=((ModelName("demo"), traits),),
    )
    out = json.loads(json.dumps(node_json(node)))
    assert out["traits"] == {
        "demo": {"capabilities": ["constraints", "tools"], "context_length": 32768, "engine": ""}
    }
