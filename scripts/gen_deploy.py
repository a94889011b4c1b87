"""Write the generated files under deploy/ (systemd units, launchd jobs) from node_agent.install.

They are what `node-agent service install` and `cluster service install` would write for the
documented system install; tests/unit/deploy checks that they are up to date.
"""

from __future__ import annotations

from pathlib import Path

from node_agent.install.layout import documented
from node_agent.install.units import Role, sysusers_conf

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
ROLES: tuple[Role, ...] = ("agent", "head")


def expected() -> dict[Path, bytes]:
    """Every generated file under deploy/ and its contents."""
    files = {DEPLOY / "systemd" / "meterless.sysusers.conf": sysusers_conf().encode()}
    for role in ROLES:
        unit = documented(role, "linux")
        files[DEPLOY / "systemd" / unit.path.name] = unit.text
        job = documented(role, "darwin")
        files[DEPLOY / "launchd" / job.path.name] = job.text
    return files


def main() -> None:
    """Write them."""
    for path, text in expected().items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(text)
        print(path.relative_to(ROOT))


if __name__ == "__main__":
    main()
