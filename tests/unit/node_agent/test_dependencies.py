"""What every agent imports is declared in pyproject.toml's core dependencies: an agent-only
install (`pip install 'meterless[mlx]'` on a Mac) must start without anything else pulled in."""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from importlib.metadata import packages_distributions
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
ENGINE_ONLY = {"mlx", "mlx_lm", "vllm", "torch", "llguidance", "transformers"}  # extras


def module_level_imports(path: Path) -> set[str]:
    """The top-level packages a module imports when it is loaded (not inside functions)."""
    names = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def declared() -> set[str]:
    """The core dependencies' distribution names, normalised."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return {_normal(re.split(r"[<>=!~;\[ ]", dep)[0]) for dep in project["dependencies"]}


def _normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def test_every_third_party_package_the_agent_imports_is_declared() -> None:
    imported: set[str] = set()
    for path in (ROOT / "node_agent").glob("*.py"):
        imported |= module_level_imports(path)
    third_party = imported - set(sys.stdlib_module_names) - {"node_agent", "__future__"}
    third_party -= ENGINE_ONLY
    assert "cryptography" in third_party  # the cluster secret's TLS (node_agent/trust.py)
    owners = packages_distributions()
    missing = {name for name in third_party if not {_normal(d) for d in owners[name]} & declared()}
    assert not missing
