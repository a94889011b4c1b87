"""The admin operations' error contract: what crosses the Serve handle back to the gateway."""

from __future__ import annotations

from typing import Any

import pytest

from cluster.control import admin_ops
from cluster.deployments.deployer import DeployError
from cluster.errors import InvalidRequest, NotFound


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
