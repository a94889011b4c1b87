"""The admin operations' error contract (what crosses the Serve handle back to the gateway), and
the alias operations on a real controller."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from cluster.access.key_store import KeyRegistry
from cluster.control import admin_ops
from cluster.control.config import ControllerConfig
from cluster.control.controller import Controller
from cluster.deployments.deployer import DeployError
from cluster.errors import InvalidRequest, NotFound
from cluster.types import ModelAlias, ModelName


async def _fails(status: int) -> dict[str, Any]:
    raise DeployError("no deployment named 'x'", status)


async def test_a_deploy_error_becomes_the_admin_api_error_of_its_status() -> None:
    with pytest.raises(NotFound, match="no deployment"):
        await admin_ops._deploying(_fails(404))
    with pytest.raises(InvalidRequest, match="no deployment"):
        await admin_ops._deploying(_fails(400))


class _Ops:
    async def revoke_key(self, name: str) -> dict[str, Any]:
        raise NotFound(f"no live key named {name!r}")


async def test_an_operation_returns_its_api_error_and_refuses_unknown_names() -> None:
    answer = await admin_ops.run(_Ops(), "revoke_key", ("k",))  # type: ignore[arg-type]
    assert isinstance(answer, NotFound) and "no live key" in answer.message
    with pytest.raises(ValueError, match="no admin operation"):
        await admin_ops.run(_Ops(), "__init__", ())  # type: ignore[arg-type]
    assert "deploy" in admin_ops.OPERATIONS and "run" not in admin_ops.OPERATIONS


@pytest.mark.timeout(10)
async def test_aliases_are_set_pushed_with_the_table_removed_and_kept_over_a_restart(
    tmp_path: Path,
) -> None:
    config = ControllerConfig(mdns=False, data_dir=str(tmp_path), settle_max_s=0.0)
    c = Controller(config)
    ops = admin_ops.AdminOps(c, KeyRegistry(":memory:"))
    await c.start()
    try:
        before = await c.wait_table(-1)
        answer = await ops.set_alias("gpt-*", ModelName("demo"))
        assert answer == {"name": "gpt-*", "model": "demo", "glob": True, "served": False}
        await ops.set_alias("claude-haiku", ModelName("demo"))
        pushed = await c.wait_table(before.version, timeout_s=1.0)
        assert pushed.version > before.version
        assert [a.name for a in pushed.aliases] == ["claude-haiku", "gpt-*"]
        assert [a["name"] for a in await ops.list_aliases()] == ["claude-haiku", "gpt-*"]
        with pytest.raises(InvalidRequest, match="itself an alias"):
            await ops.set_alias("codex", ModelName("claude-haiku"))
        removed = await ops.remove_alias("claude-haiku")
        assert removed["removed"] and removed["model"] == "demo"
        with pytest.raises(NotFound, match="no alias named 'claude-haiku'; aliases: gpt-\\*"):
            await ops.remove_alias("claude-haiku")
    finally:
        await c.stop()
    again = Controller(config)
    await again.start()
    try:
        table = await again.wait_table(-1)
        assert table.aliases == (ModelAlias("gpt-*", ModelName("demo")),)
    finally:
        await again.stop()
