"""What the admin API answers about nodes and models, from a gateway's node table."""

from __future__ import annotations

import dataclasses
from typing import Any

from cluster.errors import NotFound
from cluster.types import NodeTable, NodeView


def node_json(n: NodeView) -> dict[str, Any]:
    """A node as the admin API shows it."""
    out = dataclasses.asdict(n)
    out["state"] = n.state.value
    out["engines"], out["models"] = list(n.engines), list(n.models)
    return out


def find_node(table: NodeTable, ref: str) -> NodeView:
    """The node whose id or name is `ref`, else whose id starts with it; 404 if none or
    ambiguous. Exact matches win: a node named `a3` is not ambiguous with an id `a3c2…`."""
    matches = [n for n in table.nodes if ref in (n.node_id, n.name)] or [
        n for n in table.nodes if n.node_id.startswith(ref)
    ]
    if len(matches) != 1:
        known = ", ".join(f"{n.name} ({n.node_id[:12]})" for n in table.nodes) or "none"
        what = "ambiguous" if matches else "unknown"
        raise NotFound(f"{what} node {ref!r}; known nodes: {known}", param="node")
    return matches[0]


def models_json(table: NodeTable) -> list[dict[str, Any]]:
    """Per model: every node that has it, and the ones that can take requests."""
    names = sorted({m for n in table.nodes for m in n.models})
    return [
        {
            "model": m,
            "nodes": [n.name for n in table.nodes if m in n.models],
            "ready_nodes": [n.name for n in table.nodes if m in n.models and n.routable],
        }
        for m in names
    ]
