"""Deploy request bodies and the desired-vs-actual model listing."""

from __future__ import annotations

import json

import pytest

from cluster.deployments.placement import DeploymentSpec
from cluster.deployments.requests import merged_models, parse_deploy, parse_model_name
from cluster.errors import InvalidRequest, NotFound


def ids(ref: str) -> str:
    if ref == "ghost":
        raise NotFound("unknown node 'ghost'")
    return f"id-{ref}"


def test_a_deploy_body_becomes_a_spec_with_node_ids() -> None:
    body = json.dumps(
        {
            "model": "org/qwen",
            "replicas": 2,
            "nodes": ["mini"],
            "engine": "mlx",
            "context_length": 8192,
            "concurrency": 4,
            "dry_run": True,
        }
    ).encode()
    spec, dry = parse_deploy(body, ids)
    assert dry is True
    assert spec == DeploymentSpec(
        name="org/qwen",
        model="org/qwen",
        engine="mlx",
        replicas=2,
        nodes=("id-mini",),
        context_length=8192,
        concurrency=4,
    )


@pytest.mark.parametrize(
    "body",
    [
        b"{",
        b"{}",
        b'{"model": "m", "replicas": "2"}',
        b'{"model": "m", "nodes": "a"}',
        b'{"model": "m", "replicas": true}',
    ],
)
def test_bad_bodies_are_invalid_requests(body: bytes) -> None:
    with pytest.raises(InvalidRequest):
        parse_deploy(body, ids)


@pytest.mark.parametrize(
    ("given", "stored"),
    [("", ""), ("none", "none"), ("qwen3_coder", "qwen3_coder"), ("hermes", "json_tools")],
)
def test_a_tool_parser_is_stored_by_its_mlx_lm_name(given: str, stored: str) -> None:
    spec, _ = parse_deploy(json.dumps({"model": "m", "tool_parser": given}).encode(), ids)
    assert spec.tool_parser == stored


def test_an_unknown_tool_parser_is_refused_with_the_known_ones() -> None:
    with pytest.raises(InvalidRequest, match=r"json_tools.*qwen3_coder") as caught:
        parse_deploy(b'{"model": "m", "tool_parser": "toolish"}', ids)
    assert caught.value.param == "tool_parser"
    with pytest.raises(InvalidRequest):
        parse_deploy(b'{"model": "m", "tool_parser": 3}', ids)


def test_an_unknown_pinned_node_is_not_found() -> None:
    with pytest.raises(NotFound):
        parse_deploy(b'{"model": "m", "nodes": ["ghost"]}', ids)


def test_an_undeploy_body_names_its_model() -> None:
    assert parse_model_name(b'{"model": "m"}') == "m"
    with pytest.raises(InvalidRequest):
        parse_model_name(b'{"model": 3}')


def test_models_merge_desired_and_actual() -> None:
    actual = [{"model": "demo", "nodes": ["a"], "ready_nodes": ["a"]}]
    desired = [{"model": "qwen", "desired": 2, "ready": 0, "replicas": []}]
    merged = merged_models(actual, desired)
    assert [m["model"] for m in merged] == ["demo", "qwen"]
    assert merged[0]["desired"] is None and merged[1]["desired"] == 2
    assert merged[1]["nodes"] == [] and merged[1]["ready_nodes"] == []
