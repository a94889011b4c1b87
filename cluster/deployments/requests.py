"""The admin API's deployment bodies: parse a deploy request, merge desired and actual models.

Pure: the admin routes (cluster/gateway/admin.py) parse with these; nothing here does I/O.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from cluster.deployments.placement import DeploymentSpec
from cluster.errors import InvalidRequest
from cluster.types import ModelName, NodeId
from node_agent.engines.parsing import normalize_tool_parser

_INTS = {"replicas": 1, "context_length": 0, "concurrency": 1}


def parse_deploy(body: bytes, node_id: Callable[[str], NodeId]) -> tuple[DeploymentSpec, bool]:
    """A deploy request's spec and dry-run flag; `node_id` resolves a node name or id prefix."""
    try:
        data = json.loads(body or b"{}")
    except ValueError as exc:
        raise InvalidRequest(f"the body is not JSON: {exc}") from None
    if not isinstance(data, dict) or not isinstance(data.get("model"), str) or not data["model"]:
        raise InvalidRequest(
            "a deploy request needs a `model` (a path, a hub id or demo)", param="model"
        )
    ints = {}
    for key, default in _INTS.items():
        value = data.get(key, default)
        if not isinstance(value, int) or isinstance(value, bool):
            raise InvalidRequest(f"{key} must be an integer", param=key)
        ints[key] = value
    nodes = data.get("nodes") or []
    if not isinstance(nodes, list) or not all(isinstance(n, str) for n in nodes):
        raise InvalidRequest("nodes must be a list of node names or ids", param="nodes")
    engine = data.get("engine") or ""
    if engine in ("any",):
        engine = ""
    spec = DeploymentSpec(
        name=ModelName(str(data.get("name") or data["model"])),
        model=data["model"],
        engine=str(engine),
        nodes=tuple(node_id(n) for n in nodes),
        tool_parser=_tool_parser(data.get("tool_parser")),
        **ints,
    )
    return spec, bool(data.get("dry_run", False))


def _tool_parser(value: Any) -> str:
    """The request's tool parser, normalized: "" (infer), "none", or a known family."""
    if not isinstance(value, str | None):
        raise InvalidRequest("tool_parser must be a string", param="tool_parser")
    try:
        return normalize_tool_parser(value or "")
    except ValueError as exc:
        raise InvalidRequest(str(exc), param="tool_parser") from None


def merged_models(
    actual: Sequence[Mapping[str, Any]], desired: Sequence[Mapping[str, Any]]
) -> list[dict[str, Any]]:
    """Per model: the nodes serving it (actual) and, when deployed, the spec and its replicas."""
    by_name: dict[ModelName, dict[str, Any]] = {m["model"]: {**m, "desired": None} for m in actual}
    for d in desired:
        entry = by_name.setdefault(
            d["model"], {"model": d["model"], "nodes": [], "ready_nodes": []}
        )
        entry.update({k: v for k, v in d.items() if k != "model"})
    return [by_name[name] for name in sorted(by_name)]


def parse_model_name(body: bytes) -> ModelName:
    """The `model` of an undeploy request."""
    try:
        data = json.loads(body or b"{}")
    except ValueError as exc:
        raise InvalidRequest(f"the body is not JSON: {exc}") from None
    if not isinstance(data, dict) or not isinstance(data.get("model"), str):
        raise InvalidRequest("which model? give `model`", param="model")
    return ModelName(str(data["model"]))
