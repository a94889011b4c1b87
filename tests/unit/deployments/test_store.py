"""The desired state survives a restart: specs, assignments, cordons and aliases in SQLite."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from cluster.deployments.placement import DeploymentSpec
from cluster.deployments.store import SCHEMA, DeployStore, spec_from_json, spec_to_json
from cluster.types import ModelName


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


async def test_aliases_survive_reopening(tmp_path: Path) -> None:
    path = tmp_path / "deployments.sqlite3"
    store = DeployStore(path)
    await store.open()
    await store.put_alias("gpt-*", ModelName("demo"), at=1.0)
    await store.put_alias("claude-haiku", ModelName("demo"), at=1.0)
    await store.put_alias("claude-haiku", ModelName("qwen"), at=2.0)  # replaced
    await store.put_alias("old", ModelName("demo"), at=1.0)
    await store.delete_alias("old")
    await store.close()

    again = DeployStore(path)
    await again.open()
    assert await again.aliases() == {"claude-haiku": "qwen", "gpt-*": "demo"}
    await again.close()


async def test_a_file_from_before_aliases_opens_with_none(tmp_path: Path) -> None:
    path = tmp_path / "deployments.sqlite3"
    with sqlite3.connect(path) as conn:  # the schema as it was, with a spec in it
        conn.executescript(SCHEMA.split("CREATE TABLE IF NOT EXISTS aliases")[0])
        conn.execute(
            "INSERT INTO specs VALUES (?, ?, ?)",
            ("demo", spec_to_json(DeploymentSpec(name="demo", model="demo")), 1.0),
        )
    conn.close()
    store = DeployStore(path)
    await store.open()
    assert await store.aliases() == {}
    specs, _, _ = await store.load()
    assert [s.name for s in specs] == ["demo"]
    await store.put_alias("gpt-*", ModelName("demo"), at=1.0)
    assert await store.aliases() == {"gpt-*": "demo"}
    await store.close()
