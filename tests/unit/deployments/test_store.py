"""The desired state survives a restart: specs, assignments and cordons in SQLite."""

from __future__ import annotations

from pathlib import Path

from cluster.deployments.placement import DeploymentSpec
from cluster.deployments.store import DeployStore, spec_from_json, spec_to_json


async def test_specs_assignments_and_cordons_survive_reopening(tmp_path: Path) -> None:
    path = tmp_path / "deployments.sqlite3"
    spec = DeploymentSpec(
        name="qwen",
        model="org/qwen",
        engine="mlx",
        replicas=2,
        nodes=("id-a",),
        context_length=8192,
        concurrency=4,
        tool_parser="qwen3_coder",
    )
    store = DeployStore(path)
    await store.open()
    await store.put_spec(spec, at=1.0)
    await store.put_spec(DeploymentSpec(name="demo", model="demo"), at=2.0)
    await store.put_assignments({"qwen": ["id-a", "id-b"], "demo": ["id-b"]})
    await store.put_assignments({"qwen": ["id-a", "id-c"]})
    await store.set_cordon("id-b", True)
    await store.set_cordon("id-c", True)
    await store.set_cordon("id-c", False)
    await store.delete_spec("demo")
    await store.close()

    again = DeployStore(path)
    await again.open()
    specs, assignments, cordons = await again.load()
    await again.close()
    assert specs == [spec]
    assert assignments == {"qwen": ("id-a", "id-c")}
    assert cordons == {"id-b"}


def test_a_stored_spec_from_a_newer_version_still_reads() -> None:
    text = '{"name": "m", "model": "demo", "replicas": 3, "nodes": ["x"], "future_knob": 1}'
    assert spec_from_json(text) == DeploymentSpec(name="m", model="demo", replicas=3, nodes=("x",))


def test_a_stored_spec_from_before_tool_parsers_infers_the_parser() -> None:
    text = '{"name": "m", "model": "demo", "engine": "", "replicas": 1, "nodes": [], '
    text += '"context_length": 0, "concurrency": 1}'
    assert spec_from_json(text).tool_parser == ""
    spec = DeploymentSpec(name="m", model="demo", tool_parser="none")
    assert spec_from_json(spec_to_json(spec)) == spec
